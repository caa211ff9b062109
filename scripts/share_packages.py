"""Give the Colab-versions environment (.venv-colab) .venv's torch, by hard links.

A thin wrapper: the code is ``book_tools/share_packages.py``
(importable and tested); ``--help`` says how to use it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from book_tools.share_packages import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
