"""Numbers a chapter computes, named so the book's prose can quote them (Jupyter Book ``glue``).

``glue("pairs_kept", 0.958)`` records a value in the executed notebook; a page of the book then writes
``{glue:text}`../notebooks/03_pairwise_merges.ipynb::pairs_kept:.1%``` instead of typing the number, so the prose
always says what the stored run computed. Outside a Jupyter Book environment (on Colab, say) it does nothing.
"""

from __future__ import annotations

from typing import Any


def glue(name: str, value: Any) -> None:
    """Record ``value`` under ``name`` in this notebook's outputs (without displaying it)."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # not building a book: nothing reads the value
        return
    myst_glue(name, value, display=False)
