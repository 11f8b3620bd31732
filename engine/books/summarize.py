"""Extractive summaries of book texts: the books pipeline's local, deterministic summarizer.

Production summarizes with Amazon Bedrock; this one needs nothing but Python. It picks
whole sentences of the book, so a summary never says what the book does not.

Two parts:

- Sentence segmentation (`split_sentences`, `iter_sentences`). Boundaries are blank lines,
  heading lines ("Chapter 12", "CHAPTER THE LAST", "IV") and terminal punctuation followed
  by whitespace, unless local context says otherwise: an abbreviation before the point
  ("Mr.", "e.g.", initials), a lowercase word after it ('"Why?" she asked.'). Every
  decision looks at a bounded stretch of text around the boundary, so the text is cut in
  fixed-size blocks, each block is scanned once, and only the unfinished last sentence is
  carried into the next: linear time, memory of one block, and the same sentences however
  the text is chunked (as long as no stretch of 64 KiB lacks a boundary). No regex here
  can backtrack more than a bounded distance.

- Ranking (`ExtractiveSummarizer`). A sentence's score is the cosine between its set of
  content words and the book's word-frequency centroid (log counts of words seen at least
  twice), times a prior that favours the opening. The pass is single and bounded: word
  counts live in a capped vocabulary and candidate sentences in a pool that is cut back to
  its best half, scored with the counts seen so far, whenever it doubles. The final pick
  rescores the pool with the final counts, takes sentences greedily within the word and
  sentence budget (halving the weight of words already covered, so picks do not repeat
  each other) and returns them in document order. Ties go to the earlier sentence; there
  is no randomness and no iteration over hash-ordered sets, so output is the same in every
  process.

Memory does not grow with the input: about 15 MB at most (mostly the capped vocabulary),
whether the book is 1 MB or 500. Throughput is about 7-8 MB/s on one core.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

# --- Segmentation ---------------------------------------------------------------------

# Text is scanned in blocks of this many characters: big enough that per-block overhead
# is nothing, small enough that a block's sentences are a few hundred kilobytes.
BLOCK_CHARS = 1 << 16
# A stretch this long with no boundary (no punctuation, no blank line) is cut at its last
# space, so that such text cannot grow the carried tail without bound.
MAX_CARRY_CHARS = 1 << 16

_TERMINALS = ".!?…"
_OPENERS = "\"'“‘«‹([{"
_CLOSERS = "\"'”’»›)]}"

# Heading lines. Case-insensitive keyword + number ("Chapter 12", "BOOK THE FIRST",
# "Part IV: Return"), a bare front/back-matter word, a bare roman or arabic number, or a
# short line in capitals ("THE BOY WHO LIVED"). Quantifiers are possessive and bounded:
# a line that does not fit fails without backtracking.
_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
    "fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|"
    "eighty|ninety|hundred|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|"
    "tenth|last"
)
_HEADING_BODY = (
    r"(?i:(?:chapter|book|part|volume|canto|section)[^\S\n]{1,8}+"
    rf"(?:\d{{1,4}}+|[ivxlcdm]{{1,8}}+\b|(?:the[^\S\n]{{1,8}}+)?(?:{_NUMBER_WORDS})\w{{0,8}}+)"
    r"[^\n]{0,60}+)"
    r"|(?i:prologue|epilogue|preface|foreword|introduction|contents|appendix|afterword)"
    r"[.:]?+"
    r"|(?:[IVXLCDM]{1,8}+|\d{1,3}+)\.?+"
    r"|(?=[^a-z\n]{0,60}?[A-Z][^a-z\n]{0,60}?[A-Z])[^a-z\n]{2,60}+"
)
# Whether a line is a heading depends on all of it, so an unfinished last line of a block
# that is not longer than this (the longest line _HEADING can match) is left for the next.
HEADING_MAX_CHARS = 200
# Possible boundaries come from two scans, each led by a character the regex engine can
# skip to quickly (an alternation with lookbehinds ran at 5 MB/s; these run at over 150):
# - a line break that starts a blank line ("para") or a heading line (the stream starts
#   with a virtual "\n", so its first line counts);
# - a run of terminal punctuation with its closing quotes and brackets. A run always
#   matches whole, whatever follows, so a long run of dots is one match, not n tries;
#   whether whitespace follows is checked in _ends_sentence.
_LINE_BREAK = re.compile(
    r"\n(?:(?P<para>[^\S\n]*+(?=\n))"
    rf"|(?P<heading>[^\S\n]{{0,40}}+(?:{_HEADING_BODY})[^\S\n]{{0,40}}+)(?=\n|\Z))"
)
_STOP = re.compile(rf"[{re.escape(_TERMINALS)}][{re.escape(_TERMINALS)}]*+[{re.escape(_CLOSERS)}]*+")
_SKIP_TO_WORD = re.compile(rf"\s*+[{re.escape(_OPENERS)}]*+")
_LETTERS = re.compile(r"[^\W\d_]++")
_DOTTED_ACRONYM = re.compile(r"(?:[a-z]{1,2}\.)+[a-z]{1,2}")  # u.s, a.m, ph.d

# Never end a sentence: titles before a name, and Latin abbreviations inside one.
_TITLES = frozenset(
    "mr mrs ms messrs mme mlle dr prof st rev fr gen col capt lt sgt cpl maj adm gov sen "
    "rep hon pres mt ft vs v e.g i.e cf viz approx ca".split()
)
# Before a number ("No. 5", "p. 12") they do not end a sentence; before a word they may.
_NUMBERED = frozenset("no nos vol vols p pp ch chap fig figs sec art op".split())
# May or may not end a sentence: it ends if the next word is one that starts sentences.
_AMBIGUOUS = frozenset("etc jr sr al inc ltd co corp bros esq".split())

# A small English stopword list: not content for ranking, and (capitalised) the words
# that start sentences, which settles "etc. The" vs "U.S. Army". Includes the fragments
# that splitting on apostrophes leaves ("don", "isn") and dialogue words that carry no
# topic in fiction ("said", "mr").
STOPWORDS = frozenset(
    """
    a about above after again against ago all almost along already also although always am
    among an and another any anyone anything are aren around as at away back be became
    because been before being below between both but by came can cannot could couldn did
    didn do does doesn doing don done down during each either else enough even ever every
    few for from further get got had hadn has hasn have haven having he her here hers
    herself him himself his how however i if in into is isn it its itself just least less
    let like ll made many may me meanwhile might mine miss more most mr mrs ms much must my
    myself neither never no nor not now of off often on once one only or other others ought
    our ours ourselves out over own perhaps quite rather re s said same say says see seemed
    shall shan she should shouldn since so some something still such t than that the their
    theirs them themselves then there therefore these they this those though through thus
    till to too toward towards under until up upon us ve very was wasn we well went were
    weren what whatever when where whether which while who whom whose why will with within
    without won would wouldn yes yet you your yours yourself yourselves
    """.split()
)


def split_sentences(text: str) -> list[str]:
    """The sentences (and headings, and unpunctuated paragraphs) of `text`, in order, each
    with its whitespace collapsed to single spaces."""
    return list(iter_sentences((text,)))


def iter_sentences(chunks: Iterable[str], *, block_chars: int = BLOCK_CHARS) -> Iterator[str]:
    """`split_sentences` over a stream of text chunks, in memory of about `block_chars`.

    The chunks may cut the text anywhere; neither they nor `block_chars` change the result
    (unless 64 KiB pass without a boundary)."""
    for text, _words, _heading in _iter_segments(chunks, block_chars):
        yield text


# A segment: (text with whitespace collapsed, number of words, whether it is a heading).
_Segment = tuple[str, int, bool]


def _iter_segments(chunks: Iterable[str], block_chars: int = BLOCK_CHARS) -> Iterator[_Segment]:
    """Segments of the text in `chunks`, cut one block at a time. Each block is scanned
    with the unfinished tail of the one before (usually part of a sentence, at most
    MAX_CARRY_CHARS), so every character is scanned a bounded number of times."""
    if block_chars < 1:
        raise ValueError(f"block_chars must be positive, not {block_chars}")
    carry = "\n"  # the text starts at a line start, so a heading on its first line counts
    for block in _blocks(chunks, block_chars):
        buffer = carry + block
        segments, settled = _cut_segments(buffer, final=False)
        yield from segments
        forced, carry = _bound_carry(buffer[settled:])
        if forced is not None:
            yield forced
    segments, _settled = _cut_segments(carry, final=True)
    yield from segments


def _blocks(chunks: Iterable[str], size: int) -> Iterator[str]:
    """Re-cut chunks of any size into blocks of `size` characters (the last one shorter),
    so a tiny chunk is not rescanned with every carry and a huge one is not scanned whole."""
    pending: list[str] = []
    length = 0
    for chunk in chunks:
        if not isinstance(chunk, str):
            raise TypeError(f"text chunks must be str, not {type(chunk).__name__}")
        if not chunk:
            continue
        pending.append(chunk)
        length += len(chunk)
        if length >= size:
            joined = "".join(pending)
            whole = length - length % size
            for start in range(0, whole, size):
                yield joined[start : start + size]
            rest = joined[whole:]
            pending, length = ([rest], len(rest)) if rest else ([], 0)
    if pending:
        yield "".join(pending)


def _cut_segments(buffer: str, *, final: bool) -> tuple[list[_Segment], int]:
    """The segments of `buffer` whose end is certain, and where the last of them ends.

    Unless `final`, the text after that point is unfinished: it goes back in front of the
    next block. A boundary whose decision needs text past the buffer's end stops the cut.
    The settled point is always where a rescan from it finds the same boundaries as the
    scan that went through it: the end of a punctuation run, the end of a heading, or the
    newline that starts a blank line."""
    segments: list[_Segment] = []
    start = 0  # where the current segment's raw text begins
    settled = 0
    limit = len(buffer) if final else _last_line_start_if_short(buffer)
    for match in _possible_boundaries(buffer):
        if match.start() >= limit:  # on a last line that may yet prove to be a heading
            break
        if match.re is _STOP:
            ends = _ends_sentence(buffer, match, final)
            if ends is None:
                break
            if ends:
                if _append_segment(segments, buffer[start : match.end()], False):
                    settled = match.end()
                start = match.end()
        elif match.lastgroup == "para":
            if _append_segment(segments, buffer[start : match.start()], False):
                settled = match.start()
            start = match.end()
        else:  # a heading line: a segment of its own, once the whole line is in view
            if not final and match.end() == len(buffer):
                break
            _append_segment(segments, buffer[start : match.start()], False)
            _append_segment(segments, match.group("heading"), True)
            start = settled = match.end()
    else:
        if final:
            _append_segment(segments, buffer[start:], False)
    return segments, settled


def _possible_boundaries(buffer: str) -> Iterator[re.Match[str]]:
    """Blank lines, heading lines and punctuation runs in order of position; a run inside
    a heading line ("Chapter 3. The Return.") is part of the heading."""
    breaks = _LINE_BREAK.finditer(buffer)
    line_break = next(breaks, None)
    heading_end = 0
    for stop in _STOP.finditer(buffer):
        while line_break is not None and line_break.start() < stop.start():
            yield line_break
            if line_break.lastgroup == "heading":
                heading_end = line_break.end()
            line_break = next(breaks, None)
        if stop.start() >= heading_end:
            yield stop
    if line_break is not None:
        yield line_break
        yield from breaks


def _last_line_start_if_short(buffer: str) -> int:
    line_start = buffer.rfind("\n", max(0, len(buffer) - HEADING_MAX_CHARS - 1)) + 1
    return line_start if line_start > 0 else len(buffer)


def _append_segment(segments: list[_Segment], raw: str, heading: bool) -> bool:
    words = raw.split()
    if not words:
        return False
    segments.append((" ".join(words), len(words), heading))
    return True


def _ends_sentence(buffer: str, match: re.Match[str], final: bool) -> bool | None:
    """Whether the terminal punctuation `match` ends a sentence; None when that depends on
    text past the end of `buffer`."""
    end = match.end()
    if end == len(buffer):
        return True if final else None
    if not buffer[end].isspace():  # "3.14", "e.g.", "Hello.World"
        return False
    after = _SKIP_TO_WORD.match(buffer, end).end()
    if after >= len(buffer):
        return True if final else None
    first = buffer[after]
    # '"Why?" she asked.', "Wait... what", ". . ." and "3. and 4." go on.
    if first.islower() or first in _TERMINALS:
        return False
    if match.group().rstrip(_CLOSERS) != ".":
        return True  # ?, !, ellipses and mixes, before a capital, digit or symbol
    token = _token_before(buffer, match.start())
    key = token.lower()
    if not key:
        return True
    if key in _TITLES:
        return False
    if key.isdigit() and len(key) <= 3 and _starts_line(buffer, match.start() - len(token)):
        return False  # a numbered item or section: "\n  2. Definitions."
    if first.isdigit():
        return key not in _NUMBERED
    if key in _AMBIGUOUS or (len(token) == 1 and token.isupper()) or _DOTTED_ACRONYM.fullmatch(key):
        return _next_word_starts_sentence(buffer, after, final)
    return True


def _token_before(buffer: str, end: int) -> str:
    """The whitespace-delimited token that ends at `end`, without opening quotes or
    brackets; looks back a bounded distance, since abbreviations are short."""
    window = buffer[max(0, end - 24) : end]
    if not window or window[-1].isspace():
        return ""
    return window.split()[-1].lstrip(_OPENERS)


def _starts_line(buffer: str, at: int) -> bool:
    """Whether only spaces (a bounded number) lie between a newline and `at`."""
    return buffer[max(0, at - 40) : at].rstrip(" \t").endswith("\n")


def _next_word_starts_sentence(buffer: str, at: int, final: bool) -> bool | None:
    """After an abbreviation that may end a sentence ("etc.", "U.S.", an initial): it does
    if the next word is one that starts sentences ("The", "He") and is not another initial
    ("J. R. R. Tolkien", "A. A. Milne")."""
    word = _LETTERS.match(buffer, at)
    if word is None:
        return True
    if word.end() >= len(buffer) and not final:
        return None  # "The" might be the start of "Theodore"
    text = word.group()
    if len(text) == 1 and text.isupper() and buffer.startswith(".", word.end()):
        return False
    return text.lower() in STOPWORDS


def _bound_carry(carry: str) -> tuple[_Segment | None, str]:
    """Cut an unfinished tail that has grown past MAX_CARRY_CHARS at its last whitespace:
    the part before becomes a segment of its own (text with no sentence boundary in 64 KiB
    is no summary candidate anyway)."""
    if len(carry) <= MAX_CARRY_CHARS:
        return None, carry
    cut = max(carry.rfind(" "), carry.rfind("\n"), carry.rfind("\t"))
    if cut <= 0:
        cut = len(carry)
    words = carry[:cut].split()
    rest = carry[cut:]
    if not words:  # only whitespace: keep whether a line start follows
        return None, "\n" if "\n" in carry else " "
    return (" ".join(words), len(words), False), rest


# --- Ranking --------------------------------------------------------------------------

MIN_CANDIDATE_WORDS = 4
MAX_CANDIDATE_WORDS = 80
# The candidate pool is cut back to this many sentences whenever it holds twice as many.
POOL_SIZE = 1024
# The word counts keep the VOCABULARY_CAP // 2 most frequent words whenever they hold
# more than VOCABULARY_CAP: a novel has 10-30 thousand words and is never cut; text with
# ever new words is held to about 10 MB of counts.
VOCABULARY_CAP = 60_000
COUNT_BATCH = 1 << 15  # words counted in one Counter.update call
# The first sentence's score is multiplied by 1 + OPENING_BONUS, the 40th's by 1.25, ...
OPENING_BONUS = 0.5
OPENING_HALF_LIFE = 40.0
# Weight left to a word once a picked sentence covers it: the next pick says something else.
REDUNDANCY_DECAY = 0.5

# Words for counting are the whitespace-separated pieces left when digits and common
# punctuation become spaces: str.translate and str.split run at 70+ MB/s where a
# word regex runs at 15. A rarer symbol stays attached to its word, which only costs that
# word its count. Apostrophes split too, which files "Harry's" under "harry".
_NOT_IN_WORDS = str.maketrans(
    dict.fromkeys(
        "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
        "\u00a1\u00ab\u00bb\u00bf\u2010\u2011\u2012\u2013\u2014\u2015\u2018\u2019\u201a"
        "\u201c\u201d\u201e\u2026\u2039\u203a",
        " ",
    )
)
# Not content: stopwords, and every word of one or two ASCII letters.
_ASCII_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_NOT_CONTENT = STOPWORDS | frozenset(a + b for a in ("", *_ASCII_LETTERS) for b in _ASCII_LETTERS)

# A pool entry: (segment index, text, words, its distinct content words, sorted).
_Candidate = tuple[int, str, int, tuple[str, ...]]


@dataclass(frozen=True)
class Summary:
    text: str
    sentences: int
    input_words: int


@dataclass(frozen=True)
class ExtractiveSummarizer:
    """Picks up to `max_sentences` of a book's sentences, `max_words` words in all, and
    returns them in document order. The same text and settings give the same summary, in
    any process, however the text is chunked."""

    name: ClassVar[str] = "extractive"
    # Bump when the output for the same text and settings changes.
    version: ClassVar[str] = "1"

    max_words: int = 180
    max_sentences: int = 8

    def __post_init__(self) -> None:
        for setting in ("max_words", "max_sentences"):
            value = getattr(self, setting)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{setting} must be a positive int, not {value!r}")

    def summarize(self, text: str) -> Summary:
        return self.summarize_stream((text,))

    def summarize_stream(self, chunks: Iterable[str]) -> Summary:
        """Summarize text that arrives in chunks (cut anywhere), in bounded memory."""
        picked, input_words = self.extract_sentences(chunks)
        return Summary(text=" ".join(picked), sentences=len(picked), input_words=input_words)

    def extract_sentences(self, chunks: Iterable[str]) -> tuple[list[str], int]:
        """The picked sentences in document order, and the input's word count."""
        ranker = _Ranker(max_candidate_words=min(self.max_words, MAX_CANDIDATE_WORDS))
        for segment in _iter_segments(chunks):
            ranker.add(segment)
        return ranker.pick(self.max_words, self.max_sentences), ranker.input_words


class _Ranker:
    """Word counts and a bounded pool of candidate sentences, fed one segment at a time."""

    def __init__(self, max_candidate_words: int) -> None:
        self.max_candidate_words = max_candidate_words
        self.counts: Counter[str] = Counter()
        self.uncounted: list[str] = []
        self.pool: list[_Candidate] = []
        self.segments = 0
        self.input_words = 0

    def add(self, segment: _Segment) -> None:
        text, words, heading = segment
        index = self.segments
        self.segments += 1
        self.input_words += words
        tokens = text.lower().translate(_NOT_IN_WORDS).split()
        self.uncounted += tokens
        if len(self.uncounted) >= COUNT_BATCH:
            self._count_words()
        if not heading and _is_candidate(text, words, self.max_candidate_words):
            # sorted: set order follows string hashing, which differs between processes
            content = tuple(sorted(set(tokens).difference(_NOT_CONTENT)))
            self.pool.append((index, text, words, content))
            if len(self.pool) >= 2 * POOL_SIZE:
                self._prune_pool()

    def pick(self, max_words: int, max_sentences: int) -> list[str]:
        self._count_words()
        weights = _centroid_weights(self.counts, self.pool)
        return [text for _index, text, _words, _content in _select(self.pool, weights, max_words, max_sentences)]

    def _count_words(self) -> None:
        self.counts.update(self.uncounted)
        self.uncounted = []
        if len(self.counts) > VOCABULARY_CAP:
            # most_common keeps first-seen order among equal counts: deterministic
            self.counts = Counter(dict(self.counts.most_common(VOCABULARY_CAP // 2)))

    def _prune_pool(self) -> None:
        self._count_words()
        weights = _centroid_weights(self.counts, self.pool)
        self.pool = heapq.nlargest(POOL_SIZE, self.pool, key=lambda c: _rank_key(c, weights))


def _is_candidate(text: str, words: int, max_words: int) -> bool:
    """A sentence worth showing alone: neither a fragment nor a run-on, starting like a
    sentence and ending in terminal punctuation (which leaves out titles and headings)."""
    if not MIN_CANDIDATE_WORDS <= words <= max_words or text[0].islower():
        return False
    core = text.rstrip(_CLOSERS)
    return bool(core) and core[-1] in _TERMINALS


def _centroid_weights(counts: Counter[str], pool: list[_Candidate]) -> dict[str, float]:
    """Each pool word's weight in the book's centroid: log of its count, 0 if seen once."""
    weights: dict[str, float] = {}
    for candidate in pool:
        for word in candidate[3]:
            if word not in weights:
                count = counts.get(word, 0)
                weights[word] = math.log(count) if count >= 2 else 0.0
    return weights


def _centroid_score(content: tuple[str, ...], weights: dict[str, float]) -> float:
    """Cosine (up to the centroid's norm, the same for all) between the sentence's set of
    content words and the centroid: favours sentences made of the book's common words,
    without favouring length as a plain sum would. fsum is exact, so the score does not
    depend on the order of the words either."""
    if not content:
        return 0.0
    return math.fsum(map(weights.__getitem__, content)) / math.sqrt(len(content))


def _opening_prior(index: int) -> float:
    return 1.0 + OPENING_BONUS * 0.5 ** (index / OPENING_HALF_LIFE)


def _rank_key(candidate: _Candidate, weights: dict[str, float]) -> tuple[float, int]:
    # the earlier sentence wins a tie
    return _centroid_score(candidate[3], weights) * _opening_prior(candidate[0]), -candidate[0]


def _select(pool: list[_Candidate], weights: dict[str, float], max_words: int, max_sentences: int) -> list[_Candidate]:
    """Greedy picks within the budgets, best first, each pick halving its words' weight;
    returned in document order."""
    weights = dict(weights)
    remaining = [c for c in pool if c[2] <= max_words]
    picked: list[_Candidate] = []
    budget = max_words
    while remaining and len(picked) < max_sentences:
        best = max(remaining, key=lambda c: _rank_key(c, weights))
        picked.append(best)
        budget -= best[2]
        for word in best[3]:
            weights[word] *= REDUNDANCY_DECAY
        remaining = [c for c in remaining if c[2] <= budget and c[1] != best[1]]
    picked.sort()
    return picked
