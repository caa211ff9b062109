"""The repository's own execute command for the chapters (``make notebooks``; ``make book`` runs it first), and the

A thin wrapper: the code is ``book_tools/execute_notebooks.py``
(importable and tested); ``--help`` says how to use it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from book_tools.execute_notebooks import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
