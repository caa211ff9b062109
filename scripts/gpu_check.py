"""The checks that need a CUDA GPU, in one command (``make gpu-check``): run it on a GPU machine, or on a Colab GPU

A thin wrapper: the code is ``book_tools/gpu_check.py``
(importable and tested); ``--help`` says how to use it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from book_tools.gpu_check import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
