"""Render pages of the built book in headless Chromium at a 1280-px window and check that nothing is wider than the
content column: every ``table`` and every ``pre`` block must fit, so no reader meets half a table behind a horizontal
scrollbar or a code line cut off at the edge. At a phone's width (``--width 390``) the rules are a phone's: no page
scrolls sideways, a table wider than the screen scrolls in a box of its own, and no control of the page covers it.

    python scripts/check_rendered_pages.py [HTML_DIR] [--pages notebooks/05_merge_methods.html ...]
                                           [--screenshots DIR] [--width 1280] [--height 900]

``HTML_DIR`` is a built book (default ``_build/html``; build one with ``jupyter-book build .``). Without ``--pages``
every chapter and every page under ``book/`` is checked. Each page is opened from disk (``file://``), so no server
is needed. The script prints the content-column width, every table's and code block's width, and the smallest
scale at which an image (a plot) is shown; it exits 1 naming each table or block that does not fit.

It needs Chromium and the Python package ``playwright`` (``pip install playwright``; its own browser download,
``playwright install``, is not needed). On Debian/Ubuntu: ``apt-get install chromium``. The browser is found at
``$CHROMIUM``, else ``/usr/bin/chromium``; where either is missing the script says so and exits 0 (skipped), so
``make test`` can call it on any machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

SKIP_MESSAGE = "skipped: Chromium not installed (apt-get install chromium)"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Without the background-networking/component/sync switches Chromium waits on network services and hangs on a closed
# network; --no-sandbox because CI containers run as root.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOLERANCE_PX = 1  # sub-pixel rounding of layout widths

# One pass over the rendered page. The content column is the theme's <article> (pydata/sphinx-book-theme), else
# <main>. A table "fits" when its own width (not its scrolling wrapper's) is within the column; a pre block fits when
# it needs no horizontal scrolling. Images report their shown width against their natural width: plots drawn wider
# than the column are shrunk, and their text with them.
MEASURE_JS = """
() => {
  const column = document.querySelector('article.bd-article') || document.querySelector('article')
      || document.querySelector('main');
  if (!column) return null;
  const style = getComputedStyle(column);
  const box = column.getBoundingClientRect();
  const inner = box.width - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const left = box.left + parseFloat(style.paddingLeft);
  const describe = (el) => {
    const cells = [...el.querySelectorAll('thead th, tr:first-child th, tr:first-child td')].slice(0, 4);
    const text = cells.map((c) => c.textContent.trim()).filter((t) => t).join(' | ');
    return (text || el.textContent.trim()).replace(/\\s+/g, ' ').slice(0, 90);
  };
  const cellOf = (el) => {
    const cell = el.closest('div.cell');
    return cell ? [...document.querySelectorAll('div.cell')].indexOf(cell) : -1;
  };
  const tables = [...column.querySelectorAll('table')].map((el, i) => {
    const r = el.getBoundingClientRect();
    return {kind: 'table', index: i, cell: cellOf(el), width: Math.max(r.width, el.scrollWidth),
            right: r.right, left: r.left, label: describe(el)};
  });
  const pres = [...column.querySelectorAll('pre')].map((el, i) => {
    const r = el.getBoundingClientRect();
    return {kind: 'pre', index: i, cell: cellOf(el), width: el.scrollWidth, client: el.clientWidth,
            right: r.right, left: r.left, label: el.textContent.trim().split('\\n')[0].slice(0, 90)};
  });
  const images = [...column.querySelectorAll('img')].filter((el) => el.naturalWidth > 0).map((el, i) => {
    const r = el.getBoundingClientRect();
    return {kind: 'img', index: i, cell: cellOf(el), shown: r.width, natural: el.naturalWidth,
            src: el.getAttribute('src')};
  });
  return {column: inner, columnLeft: left, tables, pres, images};
}
"""


PHONE_WIDTH = 390
"""A phone's window (CSS px): at this width and below tables may be wider than the column, but each must scroll in a
box of its own, the page itself never sideways, and no button of the page may cover what a reader reads."""

# At a phone's width: how far the page scrolls sideways; each table's scroll box (its nearest ancestor that scrolls
# horizontally), whether that box lies within the window and the header row inside the box; and, with each table
# scrolled into view as a reader would, every visible fixed-position control that covers one of its cells.
PHONE_JS = """
() => {
  const column = document.querySelector('article.bd-article') || document.querySelector('article')
      || document.querySelector('main');
  if (!column) return null;
  const width = window.innerWidth;
  const scrollBox = (el) => {
    for (let node = el.parentElement; node && node !== document.body; node = node.parentElement) {
      const overflow = getComputedStyle(node).overflowX;
      if (overflow === 'auto' || overflow === 'scroll') return node;
    }
    return null;
  };
  const controls = () => [...document.querySelectorAll('button, a.btn, [role=button]')].filter((el) => {
    const style = getComputedStyle(el);
    const r = el.getBoundingClientRect();
    return style.position === 'fixed' && style.display !== 'none' && style.visibility !== 'hidden'
        && parseFloat(style.opacity) > 0 && r.width > 0 && r.height > 0;
  });
  const overlaps = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  const tables = [...column.querySelectorAll('table')].map((el, i) => {
    const box = scrollBox(el);
    const r = el.getBoundingClientRect();
    const b = box ? box.getBoundingClientRect() : null;
    const head = el.querySelector('thead');
    window.scrollTo(0, r.top + window.scrollY - 120);
    window.dispatchEvent(new Event('scroll'));
    const cells = [...el.querySelectorAll('th, td')].map((c) => c.getBoundingClientRect())
        .filter((c) => c.bottom > 0 && c.top < window.innerHeight);
    const covering = controls().filter((c) => cells.some((cell) => overlaps(cell, c.getBoundingClientRect())))
        .map((c) => (c.id || c.className || c.tagName).toString().slice(0, 60));
    return {index: i, width: el.scrollWidth, fits: r.width <= width + 1 && r.right <= width + 1,
            box: b ? {left: b.left, right: b.right} : null, headInBox: !head || !box || box.contains(head),
            covering, label: (el.querySelector('th, td') || el).textContent.trim().slice(0, 60)};
  });
  window.scrollTo(0, 0);
  return {width, pageWidth: document.documentElement.scrollWidth, tables};
}
"""


@dataclass
class PageReport:
    """What one page measured, and what did not fit."""

    page: str
    column: float
    tables: list[dict] = field(default_factory=list)
    pres: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    phone: dict | None = None


def chromium_path() -> str:
    """The browser to drive: ``$CHROMIUM`` when set, else Debian's ``/usr/bin/chromium``."""
    return os.environ.get("CHROMIUM", DEFAULT_CHROMIUM)


def chromium_available() -> bool:
    """True when both the browser binary and the ``playwright`` package are present."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    path = chromium_path()
    return os.path.isfile(path) and os.access(path, os.X_OK)


def default_pages(html_dir: Path) -> list[str]:
    """Every chapter and every prose page of the book, as paths relative to ``html_dir``."""
    pages = sorted(
        p.relative_to(html_dir).as_posix()
        for folder in ("book", "notebooks")
        for p in (html_dir / folder).glob("*.html")
    )
    return pages


def _where(item: dict) -> str:
    return f"code cell {item['cell'] + 1} on the page" if item["cell"] >= 0 else "in the prose"


def _problems(report: PageReport) -> list[str]:
    limit = report.column + TOLERANCE_PX
    problems = []
    for table in report.tables:
        if table["width"] > limit:
            problems.append(
                f"{report.page}: table {table['index'] + 1} ({_where(table)}) is {table['width']:.0f} px "
                f'wide, the content column {report.column:.0f} px: "{table["label"]}"'
            )
    for pre in report.pres:
        if pre["width"] > pre["client"] + TOLERANCE_PX:
            problems.append(
                f"{report.page}: code block {pre['index'] + 1} ({_where(pre)}) needs {pre['width']} px, "
                f'shows {pre["client"]} px: "{pre["label"]}"'
            )
    return problems


def _phone_problems(page: str, measured: dict) -> list[str]:
    width, problems = measured["width"], []
    if measured["pageWidth"] > width + TOLERANCE_PX:
        problems.append(
            f"{page}: the page is {measured['pageWidth']} px wide on a {width}-px screen (it scrolls sideways)"
        )
    for table in measured["tables"]:
        where = f'{page}: table {table["index"] + 1} ("{table["label"]}")'
        box = table["box"]
        if not table["fits"] and (box is None or box["left"] < -TOLERANCE_PX or box["right"] > width + TOLERANCE_PX):
            problems.append(f"{where} is {table['width']} px wide and does not scroll in a box of its own")
        if not table["headInBox"]:
            problems.append(f"{where}: its header row scrolls apart from its cells")
        for control in table["covering"]:
            problems.append(f"{where}: the page's control {control!r} covers some of its cells")
    return problems


def check_pages(
    html_dir: Path, pages: list[str], width: int = 1280, height: int = 900, screenshots: Path | None = None
) -> list[PageReport]:
    """Open each page in headless Chromium at ``width`` x ``height`` and measure it (see :data:`MEASURE_JS`). With
    ``screenshots``, saves the top of each page and every table and image on it as PNG files there."""
    from playwright.sync_api import sync_playwright

    reports = []
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            for name in pages:
                path = (html_dir / name).resolve()
                if not path.is_file():
                    raise FileNotFoundError(f"{path} does not exist: build the book first (jupyter-book build .)")
                page.goto(path.as_uri(), wait_until="load")
                # Images decide the layout of what follows them; measure once they are decoded.
                page.wait_for_function("() => [...document.images].every((i) => i.complete)", timeout=30_000)
                measured = page.evaluate(MEASURE_JS)
                if measured is None:
                    raise RuntimeError(f"{name}: no <article> or <main> element, is this a Jupyter Book page?")
                report = PageReport(name, measured["column"], measured["tables"], measured["pres"], measured["images"])
                if width <= PHONE_WIDTH:  # a phone: wide tables scroll in their own box instead of fitting
                    report.phone = page.evaluate(PHONE_JS)
                    report.problems = _phone_problems(name, report.phone)
                else:
                    report.problems = _problems(report)
                reports.append(report)
                if screenshots is not None:
                    _screenshots(page, name, screenshots)
        finally:
            browser.close()
    return reports


def _screenshots(page, name: str, folder: Path) -> None:
    """The top of the page, then the window as a reader sees it with each table and image scrolled to its top."""
    stem = name.replace("/", "_").removesuffix(".html")
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(folder / f"{stem}.png"))
    for kind, selector in (("table", "article table"), ("img", "article img")):
        for i, element in enumerate(page.query_selector_all(selector)):
            # A few pixels above the element keep its caption or code cell edge in view.
            element.evaluate("(el) => window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY - 80)")
            page.screenshot(path=str(folder / f"{stem}_{kind}{i}.png"))
    page.evaluate("() => window.scrollTo(0, 0)")


def summarize(reports: list[PageReport]) -> str:
    """A readable account of every page: column width, widest table and code block, most-shrunk image."""
    lines = []
    for r in reports:
        widest = max((t["width"] for t in r.tables), default=0)
        scales = [i["shown"] / i["natural"] for i in r.images if i["natural"]]
        shrink = f", smallest image scale {min(scales):.2f}" if scales else ""
        lines.append(
            f"{r.page}: column {r.column:.0f} px, {len(r.tables)} tables (widest {widest:.0f} px), "
            f"{len(r.pres)} code blocks{shrink}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0: all fit or skipped, 1: something does not fit)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html_dir", nargs="?", default="_build/html", type=Path, help="the built book")
    parser.add_argument("--pages", nargs="+", help="pages relative to HTML_DIR (default: every chapter and book page)")
    parser.add_argument("--screenshots", type=Path, help="save page, table and image screenshots in this folder")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS px")
    parser.add_argument("--height", type=int, default=900, help="window height in CSS px")
    parser.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    args = parser.parse_args(argv)
    if not chromium_available():
        print(SKIP_MESSAGE)
        return 0
    pages = args.pages or default_pages(args.html_dir)
    if not pages:
        print(f"no pages found under {args.html_dir}: build the book first (jupyter-book build .)", file=sys.stderr)
        return 1
    reports = check_pages(args.html_dir, pages, args.width, args.height, args.screenshots)
    print(summarize(reports))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in reports], indent=1))
    problems = [p for r in reports for p in r.problems]
    for problem in problems:
        print("TOO WIDE:", problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} tables or code blocks do not fit a {args.width}-px window", file=sys.stderr)
        return 1
    if args.width <= PHONE_WIDTH:
        print(
            f"no page scrolls sideways and every wide table scrolls in its own box at {args.width} px "
            f"({len(reports)} pages)"
        )
    else:
        print(f"every table and code block fits the content column at {args.width} px ({len(reports)} pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
