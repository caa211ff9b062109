"""Write the intersphinx inventories the API pages link through: ``book/_inventories/<library>.inv``.

A thin wrapper: the code is ``book_tools/write_inventories.py``
(importable and tested); ``--help`` says how to use it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from book_tools.write_inventories import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
