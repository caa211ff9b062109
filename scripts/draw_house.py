"""Draw the package's house from its imports: rooms (modules), floors, arrows, and the rooms of each wing.

A thin wrapper: the code is ``book_tools/draw_house.py``
(importable and tested); ``--help`` says how to use it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from book_tools.draw_house import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
