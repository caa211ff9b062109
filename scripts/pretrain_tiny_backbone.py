"""Pretrain the tiny profile's ViT on formula-driven synthetic images and ship it inside the package.

A thin wrapper: the code is ``book_tools/pretrain_tiny_backbone.py``
(importable and tested); ``--help`` says how to use it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from book_tools.pretrain_tiny_backbone import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
