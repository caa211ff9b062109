"""The built book in headless Chromium at a 1280-px window: every table and code block fits the content column, and
the column is as wide as lora_merge_utils.plots assumes. Needs Chromium and playwright (see README); skipped without
them. The book is built into a temporary folder (about a minute), only when the browser is there."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("check_rendered_pages", ROOT / "scripts" / "check_rendered_pages.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


CHECK = _script()
needs_chromium = pytest.mark.skipif(not CHECK.chromium_available(), reason=CHECK.SKIP_MESSAGE)


def test_the_check_skips_cleanly_without_chromium(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-chromium-here"))
    assert CHECK.main([str(tmp_path)]) == 0
    assert CHECK.SKIP_MESSAGE in capsys.readouterr().out
