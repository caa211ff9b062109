"""Point the book at a repository: its URL, branch and published site, everywhere they appear.

    python scripts/set_repository.py URL [--branch B] [--baseurl U] [--[no-]package-index] [--no-student]

``_config.yml``'s ``repository.url`` is the one place the repository is configured by hand. This script writes a new
URL there (with ``repository.branch``, ``html.baseurl``, the GitHub Pages address, and ``repository.package_index``,
whether the setup cells install the package from PyPI first: off for a fork unless ``--package-index``), editing
only those lines so the file's comments stay, and then regenerates everything derived from it, executing nothing:

* the Colab badge and the setup cell of every ``notebooks/0*.ipynb`` (``refresh_links`` in
  ``scripts/execute_notebooks.py``, the same code ``make notebooks`` uses);
* ``CITATION.cff``'s ``repository-code`` and ``url``, and the ``url`` of the BibTeX entry in ``book/intro.md``;
* the student notebooks, by running ``scripts/make_student.py`` when it exists.

The Pages workflow runs it with the repository it runs in, so a fork publishes working badges with nothing to edit.
Run with the URL already configured, it changes nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

from book_tools.execute_notebooks import PAGES, refresh_links, refresh_page

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "_config.yml"
CITATION = ROOT / "CITATION.cff"
INTRO = ROOT / "book" / "intro.md"
STUDENT = ROOT / "scripts" / "make_student.py"


def normalize_url(url: str) -> str:
    """``https://host/owner/name`` without a trailing slash or ``.git``; refuse anything else with the fix."""
    url = url.strip().rstrip("/").removesuffix(".git")
    if not re.fullmatch(r"https?://[^/\s]+/[^/\s]+/[^/\s]+", url):
        raise SystemExit(f"set_repository: {url!r} is not a repository URL; give it as https://github.com/OWNER/NAME")
    return url


def default_baseurl(url: str) -> str:
    """The GitHub Pages address of a github.com repository (a user site ``OWNER.github.io`` is served at the root)."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", url)
    if match is None:
        raise SystemExit(f"set_repository: cannot guess the Pages address of {url}; give it with --baseurl")
    owner, name = match[1].lower(), match[2]
    return (
        f"https://{owner}.github.io/" if name.lower() == f"{owner}.github.io" else f"https://{owner}.github.io/{name}/"
    )


def yaml_scalar(value: str | bool) -> str:
    """``value`` as YAML: plain when it reads back unchanged (so the committed lines stay as typed), else quoted;
    a bool as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    plain_ok = "#" not in value and yaml.safe_load(f"key: {value}") == {"key": value}
    return value if plain_ok else json.dumps(value)


def set_line(text: str, key: str, value: str | bool, section: str | None = None) -> str:
    """Set ``key: value`` in ``text`` (top level, or first level of ``section``), keeping every other line as it is.

    Edits lines instead of loading and dumping the YAML, which would drop comments and reorder keys. A missing key is
    added at the end of its section; a missing section is appended.
    """
    lines = text.splitlines(keepends=True)
    start, end, indent = 0, len(lines), ""
    if section is not None:
        header = next((i for i, line in enumerate(lines) if re.match(rf"{re.escape(section)}:\s*(#.*)?$", line)), None)
        if header is None:
            return text.rstrip("\n") + f"\n\n{section}:\n  {key}: {yaml_scalar(value)}\n"
        start = header + 1
        # The section ends at the next top-level key; comments at column 0 just before it belong to that key.
        end = next((i for i in range(start, len(lines)) if re.match(r"[^\s#]", lines[i])), len(lines))
        while end > start and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
            end -= 1
        indent = next(
            (
                re.match(r"\s+", line)[0]
                for line in lines[start:end]
                if line.strip() and not line.lstrip().startswith("#")
            ),
            "  ",
        )
    pattern = re.compile(rf"({re.escape(indent)}{re.escape(key)}:[ \t]*)(.*?)([ \t]+#.*)?(\r?\n)?$")
    for i in range(start, end):
        match = pattern.fullmatch(lines[i])
        if match:
            lines[i] = f"{match[1] or ''}{yaml_scalar(value)}{match[3] or ''}{match[4] or ''}"
            return "".join(lines)
    lines.insert(end, f"{indent}{key}: {yaml_scalar(value)}\n")
    return "".join(lines)


def configure(text: str, url: str, branch: str, baseurl: str, package_index: bool | None = None) -> str:
    """``_config.yml``'s text with the repository URL, branch and Pages address set (and checked by reading it).

    ``repository.package_index`` says whether the setup cells install the book's package from PyPI first: ``None``
    keeps it for the same repository and turns it off for another one (a fork installs its own code, not the PyPI
    release of the repository it was forked from)."""
    current = yaml.safe_load(text)["repository"]
    if package_index is None:
        package_index = bool(current.get("package_index", False)) and current.get("url", "").rstrip("/") == url
    text = set_line(text, "url", url, section="repository")
    text = set_line(text, "branch", branch, section="repository")
    text = set_line(text, "package_index", package_index, section="repository")
    text = set_line(text, "baseurl", baseurl, section="html")
    config = yaml.safe_load(text)
    read = (
        config["repository"]["url"],
        config["repository"]["branch"],
        config["html"]["baseurl"],
        config["repository"]["package_index"],
    )
    if read != (url, branch, baseurl, package_index):
        raise SystemExit(f"set_repository: _config.yml would read back as {read}; fix it by hand")
    return text


def sync_citation(text: str, url: str, baseurl: str) -> str:
    """``CITATION.cff``'s text with ``repository-code`` and ``url`` (the book's site) set."""
    return set_line(set_line(text, "repository-code", url), "url", baseurl)


BIBTEX_URL = re.compile(r"(```bibtex\n(?:(?!```).*\n)*?\s*url\s*=\s*\{)[^}\n]*(\})")


def sync_intro(text: str, baseurl: str) -> str:
    """``book/intro.md``'s text with the ``url`` of its BibTeX entry (the *Cite this book* box) set."""
    return BIBTEX_URL.sub(lambda m: f"{m[1]}{baseurl}{m[2]}", text, count=1)


def refresh_notebooks(root: Path = ROOT) -> list[Path]:
    """Regenerate the badges and setup cells of the chapters, and the pages' setup cells, from ``_config.yml``; return
    the notebooks changed."""
    changed = []
    for path in sorted((root / "notebooks").glob("0*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        if refresh_links(notebook, path.name):
            nbformat.write(notebook, path)
            changed.append(path)
    for page in PAGES:
        path = root / page.relative_to(ROOT)
        notebook = nbformat.read(path, as_version=4)
        if refresh_page(notebook):
            nbformat.write(notebook, path)
            changed.append(path)
    return changed


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it already holds it (an unchanged file keeps its timestamp)."""
    if not path.exists() or path.read_text() == text:
        return False
    path.write_text(text)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the repository, e.g. https://github.com/OWNER/NAME")
    parser.add_argument("--branch", default="main", help="the branch the Colab badges open (default: main)")
    parser.add_argument("--baseurl", help="the published site (default: https://OWNER.github.io/NAME/)")
    parser.add_argument("--no-student", action="store_true", help="do not regenerate notebooks/student")
    parser.add_argument(
        "--package-index",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether this repository publishes lora-merge-utils to PyPI, so that the setup cells install it from "
        "there first (default: kept for the same repository, off for another one)",
    )
    args = parser.parse_args()
    url = normalize_url(args.url)
    branch = args.branch.strip()
    if not branch or any(c.isspace() for c in branch):
        raise SystemExit(f"set_repository: {args.branch!r} is not a branch name")
    baseurl = (args.baseurl.strip().rstrip("/") + "/") if args.baseurl else default_baseurl(url)

    changed = [
        path
        for path, text in [(CONFIG, configure(CONFIG.read_text(), url, branch, baseurl, args.package_index))]
        if write_if_changed(path, text)
    ]
    if CITATION.exists():
        changed += [CITATION] if write_if_changed(CITATION, sync_citation(CITATION.read_text(), url, baseurl)) else []
    if INTRO.exists():
        changed += [INTRO] if write_if_changed(INTRO, sync_intro(INTRO.read_text(), baseurl)) else []
    changed += refresh_notebooks()
    for path in changed:
        print(f"updated {path.relative_to(ROOT)}")
    print(f"repository {url} (branch {branch}), site {baseurl}: {len(changed)} file(s) changed")
    if STUDENT.exists() and not args.no_student:
        # The student notebooks derive their badges from _config.yml too; the script's own output says what it wrote.
        subprocess.run([sys.executable, str(STUDENT)], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
