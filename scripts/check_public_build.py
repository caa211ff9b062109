"""Fail if any solution reached the public book: its code, its text output or its images.

    python scripts/check_public_build.py _build/html

For each chapter, every solution cell (tagged ``solution`` in ``notebooks/*.ipynb``) is looked for in the chapter's
rendered page, as text (so syntax highlighting cannot hide a match): each line of its source and each line of its
text output that holds a number, when long enough to be telling, and each of its images, byte for byte. Lines that
also occur (even as part of a line) outside the solutions of that chapter are not telling and are skipped.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path

import nbformat
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
MIN_LENGTH = 16


def _text_lines(cell) -> list[str]:
    """The telling lines of a cell: its source, and the lines of its text output that hold a number (a table's
    header row, say, can also head another cell's table; the numbers are the answer)."""
    lines = cell.source.splitlines()
    for output in cell.get("outputs", []):
        text = output.get("text") or output.get("data", {}).get("text/plain", "")
        lines += [line for line in "".join(text).splitlines() if any(ch.isdigit() for ch in line)]
    return [" ".join(line.split()) for line in lines]


def _images(cell) -> list[bytes]:
    return [
        base64.b64decode(output["data"][mime])
        for output in cell.get("outputs", [])
        for mime in ("image/png", "image/jpeg")
        if mime in output.get("data", {})
    ]


def solution_leaks(notebook, page: Path) -> list[str]:
    """What of ``notebook``'s solutions is on the rendered ``page`` (empty when nothing is)."""
    solutions = [c for c in notebook.cells if "solution" in c.metadata.get("tags", [])]
    rest = [c for c in notebook.cells if c not in solutions]
    others = "\n".join(
        [line for c in rest for line in _text_lines(c)]
        + [" ".join(line.split()) for c in rest for line in c.source.splitlines()]
    )
    soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
    text = " ".join(soup.get_text().split())  # no separator: highlighted code is many spans of one line
    leaks = []
    for cell in solutions:
        for line in _text_lines(cell):
            if len(line) >= MIN_LENGTH and line not in others and line in text:
                leaks.append(f"solution {cell.metadata.get('exercise', '?')}: {line[:80]!r}")
        shown = [(page.parent / img["src"]).resolve() for img in soup.find_all("img") if img.get("src")]
        pictures = {p.read_bytes() for p in shown if p.is_file()}
        leaks += [
            f"solution {cell.metadata.get('exercise', '?')}: an image of its output"
            for image in _images(cell)
            if image in pictures
        ]
    return leaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", type=Path, help="the built book, e.g. _build/html")
    args = parser.parse_args()
    problems, checked = [], 0
    for path in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        page = args.html / "notebooks" / f"{path.stem}.html"
        if not page.exists():
            problems.append(f"{page} is missing: build the book first (make html)")
            continue
        checked += 1
        problems += [f"{path.name}: {leak}" for leak in solution_leaks(nbformat.read(path, as_version=4), page)]
    if problems:
        sys.exit("solutions reached the public book:\n  " + "\n  ".join(problems))
    print(f"no solution code or output on the {checked} chapter pages")


if __name__ == "__main__":
    main()
