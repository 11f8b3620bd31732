"""Generated books for tests, the demo and benchmarks: readable-shaped English-like text,
each book about a few words of its own, so a query written from a book can be traced back.

    python -m engine.books.sample_books <directory> [--books 2000] [--words 1500] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_FILLER = (
    "the a an and but or of in on at to from with by for about over under after before "
    "old new small great long dark bright quiet distant early late strange simple "
    "house road river city village night morning winter summer letter door window garden "
    "walked spoke waited watched remembered carried followed found lost opened closed "
    "slowly quickly softly again always never often still perhaps together alone"
).split()
_SYLLABLES = "ka lo mi ra ven tor sil dun bre quo fen gar lis mor nath pel rin sul thar vok wen yul zor".split()
_FIRST = "Anna Boris Clara Daniel Elena Felix Greta Hugo Irene Jonas Karla Leon Mira Nils Olga Pavel".split()
_LAST = "Achterberg Brandt Castellano Dvorak Eriksen Fontaine Gallo Haugen Ivanova Jansen Kowalski".split()


@dataclass(frozen=True)
class SampleBook:
    book_id: str
    title: str
    author: str
    topic: tuple[str, ...]  # the words this book is about

    def query(self) -> str:
        """A query someone who read the book might type: its words, not its sentences."""
        a, b, c = self.topic[:3]
        return f"the story about {a} and the {b} near {c}"


def _word(rng: random.Random) -> str:
    # up to four syllables: 23^4 words, room for the 6 distinct topic words of 10,000+ books
    # (two or three syllables give 12,696, which ran out past about 2,000 books)
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))


def _sentence(rng: random.Random, topic: tuple[str, ...], author: str) -> str:
    words = [rng.choice(_FILLER) for _ in range(rng.randint(6, 16))]
    for _ in range(rng.randint(1, 3)):  # the book's own words, where a sentence of it would put them
        words.insert(rng.randrange(len(words) + 1), rng.choice(topic))
    if rng.random() < 0.1:
        words.insert(0, f"Mr. {author.split()[-1]}")  # abbreviations the summarizer must not split on
    text = " ".join(words)
    text = text[0].upper() + text[1:]
    if rng.random() < 0.1:
        return f'"{text}?" she asked.'
    return text + rng.choice(".....!?")


def generate(count: int, *, words: int = 1500, seed: int = 0) -> Iterator[tuple[SampleBook, str]]:
    """`count` books of about `words` words each; the same seed gives the same books."""
    rng = random.Random(seed)
    vocabulary: set[str] = set()
    for n in range(count):
        topic = []
        while len(topic) < 6:
            w = _word(rng)
            if w not in vocabulary:  # no two books share a topic word
                vocabulary.add(w)
                topic.append(w)
        author = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        title = f"The {topic[0].title()} of {topic[1].title()}"
        book = SampleBook(f"generated/book-{seed}-{n:06d}", title, author, tuple(topic))
        paragraphs, written = [], 0
        while written < words:
            sentences = [_sentence(rng, book.topic, author) for _ in range(rng.randint(3, 7))]
            written += sum(len(s.split()) for s in sentences)
            paragraphs.append(" ".join(sentences))
        yield book, f"{title}\n\n" + "\n\n".join(paragraphs) + "\n"


def write_books(
    root: Path, count: int, *, prefix: str = "books/texts", words: int = 1500, seed: int = 0, gzip_every: int = 3
) -> list[SampleBook]:
    """Write texts (every gzip_every-th gzipped) and JSON sidecars under root/prefix."""
    books = []
    for n, (book, text) in enumerate(generate(count, words=words, seed=seed)):
        base = root / prefix / book.book_id
        base.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode()
        if gzip_every and n % gzip_every == gzip_every - 1:
            base.with_name(base.name + ".txt.gz").write_bytes(gzip.compress(data, 1))
        else:
            base.with_name(base.name + ".txt").write_bytes(data)
        sidecar = {"title": book.title, "author": book.author, "language": "en", "year": 1900 + n % 120}
        base.with_name(base.name + ".json").write_text(json.dumps(sidecar))
        books.append(book)
    return books


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--books", type=int, default=2000)
    parser.add_argument("--words", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    books = write_books(args.root, args.books, words=args.words, seed=args.seed)
    print(f"{len(books)} books under {args.root / 'books/texts'}")


if __name__ == "__main__":
    main()
