"""``python -m lora_merge_utils``: see :mod:`lora_merge_utils.cli`."""

import sys

from .cli import main

sys.exit(main(prog="python -m lora_merge_utils"))  # usage lines name the command as it was typed
