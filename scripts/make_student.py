"""Write the student edition of the chapters: every solution replaced by a labelled stub, every output cleared.

A thin wrapper: the code is ``book_tools/make_student.py``
(importable and tested); ``--help`` says how to use it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from book_tools.make_student import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
