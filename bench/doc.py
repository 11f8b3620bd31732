"""Figures into docs/PERFORMANCE.md: each benchmark owns the text between its two markers."""

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"


def write_between_markers(begin: str, end: str, table: str, section_if_missing: str) -> None:
    """Replace what lies between begin and end with table; append the section (which holds
    both markers) first if the document lacks them."""
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    if begin not in text:
        text = text.rstrip("\n") + "\n" + section_if_missing
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    DOC.write_text(f"{head}{begin}\n{table}\n{end}{tail}")
    print(f"\nwrote {DOC}")
