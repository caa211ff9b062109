"""Build one of the book's three editions from the chapters in ``notebooks/``, each from a staged copy.

A thin wrapper: the code is ``book_tools/build_edition.py``
(importable and tested); ``--help`` says how to use it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from book_tools.build_edition import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
