"""Point the book at a repository: its URL, branch and published site, everywhere they appear.

A thin wrapper: the code is ``book_tools/set_repository.py``
(importable and tested); ``--help`` says how to use it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from book_tools.set_repository import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
