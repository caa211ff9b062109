"""Fail if any solution reached the public book: its code, its text output or its images, in any file the site serves.

    python scripts/check_public_build.py _build/html

A site is every file it serves, not its pages alone: the chapter pages, the notebooks offered for download
(``_sources``), the search index, and any other text or image file. For each chapter, every solution cell (tagged
``solution`` in ``notebooks/*.ipynb``) is looked for in every one of them, as text (so syntax highlighting cannot
hide a match; a notebook is read cell by cell, a page without its markup): each line of its source and each line of
its text output that holds a number, when long enough to be telling, and each of its images, byte for byte. Lines that
also occur (even as part of a line) outside the solutions of that chapter are not telling and are skipped.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

import nbformat
from bs4 import BeautifulSoup

from book_tools.execute_notebooks import PAGES

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


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}
BINARY_SUFFIXES = IMAGE_SUFFIXES | {
    ".woff",
    ".woff2",
    ".ttf",
    ".eot",
    ".ico",
    ".pdf",
    ".zip",
    ".gz",
    ".pickle",
    ".doctree",
}


def served_text(path: Path) -> str | None:
    """The text a served file shows or hands out, on one line per line of it: a page without its markup, a
    notebook's cells (sources and outputs), any other text file as it is; ``None`` for a binary file."""
    if path.suffix.lower() in BINARY_SUFFIXES:
        return None
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.name == "searchindex.js":
        return _search_index_words(raw)
    if path.suffix.lower() in (".html", ".htm"):
        return BeautifulSoup(raw, "html.parser").get_text()
    if path.suffix.lower() == ".ipynb":
        try:
            notebook = json.loads(raw)
        except ValueError:
            return raw
        parts = []
        for cell in notebook.get("cells", []):
            parts.append("".join(cell.get("source", "")))
            for output in cell.get("outputs", []):
                parts.append("".join(output.get("text", "")))
                parts.append("".join(output.get("data", {}).get("text/plain", "")))
        return "\n".join(parts)
    return raw


def _search_index_words(raw: str) -> str:
    """What Sphinx's search index hands out, one string per line: every key and text value of its JSON (titles,
    indexed words, object names). Read as raw JSON, its term -> page-number map made false matches
    (``"lora_alpha": 16,`` is the word lora_alpha on page 16, not a solution's line)."""
    try:
        index = json.loads(raw[raw.index("(") + 1 : raw.rindex(")")])
    except ValueError:
        return raw
    strings: list[str] = []

    def walk(value) -> None:
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                strings.append(str(key))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(index)
    return "\n".join(strings)


def _flat(text: str) -> str:
    return " ".join(text.split())  # no separator: highlighted code is many spans of one line


def public_text(notebooks) -> str:
    """Everything the chapters show outside their solutions, one line per line: a solution line that occurs here
    too (a call every chapter makes, say) tells nothing when it is found on a page."""
    rest = [c for notebook in notebooks for c in notebook.cells if "solution" not in c.metadata.get("tags", [])]
    return "\n".join(
        [line for c in rest for line in _text_lines(c)]
        + [" ".join(line.split()) for c in rest for line in c.source.splitlines()]
    )


def solution_leaks(notebook, files: list[Path], others: str | None = None) -> list[str]:
    """What of ``notebook``'s solutions is in ``files`` (empty when nothing is), as ``"<file>: solution N.M: ..."``.
    Lines that occur in ``others`` (default: the rest of ``notebook``; :func:`public_text` of every chapter for a
    whole site) are not telling and are skipped."""
    solutions = [c for c in notebook.cells if "solution" in c.metadata.get("tags", [])]
    others = public_text([notebook]) if others is None else others
    telling = [
        (cell.metadata.get("exercise", "?"), line)
        for cell in solutions
        for line in _text_lines(cell)
        if len(line) >= MIN_LENGTH and line not in others
    ]
    images = [(cell.metadata.get("exercise", "?"), image) for cell in solutions for image in _images(cell)]
    leaks = []
    for path in files:
        text = served_text(path)
        if text is None:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                data = path.read_bytes()
                leaks += [
                    f"{path.name}: solution {exercise}: an image of its output"
                    for exercise, image in images
                    if image == data
                ]
            continue
        flat = _flat(text)
        leaks += [f"{path.name}: solution {exercise}: {line[:80]!r}" for exercise, line in telling if line in flat]
    return leaks


def served_files(site: Path) -> list[Path]:
    return sorted(p for p in Path(site).rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", type=Path, help="the built book, e.g. _build/html")
    args = parser.parse_args()
    files = served_files(args.html)
    chapters = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    problems = [
        f"{page} is missing: build the book first (make html)"
        for page in (args.html / "notebooks" / f"{path.stem}.html" for path in chapters)
        if not page.exists()
    ]
    notebooks = {path: nbformat.read(path, as_version=4) for path in chapters}
    pages = "\n".join(
        " ".join(line.split()) for page in (ROOT / "book").glob("*.md") for line in page.read_text().splitlines()
    )
    # The notebook pages are public in full: a line they show tells nothing of a solution.
    shown = [nbformat.read(path, as_version=4) for path in PAGES]
    others = public_text([*notebooks.values(), *shown]) + "\n" + pages
    for path, notebook in notebooks.items():
        problems += [f"{path.name} -> {leak}" for leak in solution_leaks(notebook, files, others)]
    if problems:
        sys.exit("solutions reached the public book:\n  " + "\n  ".join(problems))
    print(f"no solution code, output or image in the {len(files)} files the site serves ({len(chapters)} chapters)")


if __name__ == "__main__":
    main()
