"""Render pages of the built book in headless Chromium at a 1280-px window and check that nothing is wider than the

A thin wrapper: the code is ``book_tools/check_rendered_pages.py``
(importable and tested); ``--help`` says how to use it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from book_tools.check_rendered_pages import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
