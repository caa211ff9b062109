"""The examples in the library's docstrings (shown on the book's API page) run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "profiles",
    "artifacts",
    "batches",
    "data.tasks",
    "backbone",
    "tuning",
    "stats",
    "combine",
    "merging",
    "multitask",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"lora_merge_utils.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"lora_merge_utils.{name} has no example"
    assert result.failed == 0, f"{result.failed} example(s) of lora_merge_utils.{name} failed (run doctest on it)"
