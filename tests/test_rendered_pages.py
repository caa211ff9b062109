"""The built book in headless Chromium at a 1280-px window: every table and code block fits the content column, and
the column is as wide as lora_merge_utils.plots assumes. Needs Chromium and playwright (see README); skipped without
them. The book is built into a temporary folder (about a minute), only when the browser is there."""

from __future__ import annotations

from .helpers import load_script

CHECK = load_script("check_rendered_pages")  # registered in sys.modules (its dataclass looks its module up there)


def test_the_check_skips_cleanly_without_chromium(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-chromium-here"))
    assert CHECK.main([str(tmp_path)]) == 0
    assert CHECK.SKIP_MESSAGE in capsys.readouterr().out
