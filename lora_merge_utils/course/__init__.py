"""Course tooling around the chapters, and the book's policy: the chapter registry (:mod:`.chapters`), the chapters'
checks of what their world shows (:mod:`.checks`), exercises and their checks (:mod:`.exercises`), grading of
submitted notebooks (:mod:`.grading`, :mod:`.sandbox`), the verdicts the book corrects as one family
(:mod:`.verdicts`), the time and memory plan of every chapter (:mod:`.plan`, :mod:`.memory`), what the checks expect
on real data (:mod:`.expectations`), and numbers glued into the prose (:mod:`.report`).

The library's core never imports this wing, and the package's top level re-exports none of it. The names a chapter
uses in nearly every cell are here, imported on first use (PEP 562) like the top level's:
``from lora_merge_utils.course import check, check_exercise, glue``.
"""

from .._lazy import lazy_exports as _lazy_exports

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("check", "expects_real_results"), "checks"),
    **dict.fromkeys(("EXERCISES", "check_exercise"), "exercises"),
    "EXPECTED": "expectations",
    "glue": "report",
    **dict.fromkeys(("Verdict", "book_family", "read_verdicts", "record_verdicts", "stale_chapters"), "verdicts"),
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS, globals())
