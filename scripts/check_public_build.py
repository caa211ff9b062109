"""Fail if any solution reached the public book: its code, its text output or its images, in any file the site serves.

A thin wrapper: the code is ``book_tools/check_public_build.py``
(importable and tested); ``--help`` says how to use it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from book_tools.check_public_build import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
