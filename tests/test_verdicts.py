"""The book-wide family of verdicts: chapters record, chapter 7 reads and corrects
(lora_merge_utils.course.verdicts)."""

from __future__ import annotations

import json
import math

import nbformat
import numpy as np
import pytest

from lora_merge_utils.course.chapters import verdict_chapters
from lora_merge_utils.course.verdicts import (
    Verdict,
    book_family,
    read_verdicts,
    record_verdicts,
    stale_chapters,
    verdicts_code_version,
    verdicts_file,
)
from lora_merge_utils.stats import Estimate, holm, holm_p_values

from .helpers import ROOT


def _estimate(value: float, se: float, df: float = 5) -> Estimate:
    from scipy.stats import t

    q = float(t.ppf(0.975, df))
    return Estimate(value, value - q * se, value + q * se, se, df)


def test_recorded_verdicts_are_read_back_with_the_chapters_still_missing(tmp_path):
    e = _estimate(0.03, 0.01)
    record_verdicts(tmp_path, 4, {"triples": Verdict.of("triples beat the floor", e)})
    table, missing = read_verdicts(tmp_path, chapters=verdict_chapters())
    assert missing == [5, 6]
    assert read_verdicts(tmp_path)[1] == [], "by default, the chapters that recorded some"
    row = table.iloc[0]
    assert (row["chapter"], row["name"], row["question"]) == (4, "triples", "triples beat the floor")
    assert row["p_value"] == pytest.approx(e.p_value) and row["resolved_in_chapter"] == e.resolved
    assert row["estimate"] == "+0.030 [+0.004, +0.056]"
    assert row["resolvable"] == pytest.approx(e.smallest_resolvable(0.8)) and row["resolvable"] > abs(e.value) > 0, (
        "a verdict carries the smallest difference its design resolves with 80% power"
    )
    record_verdicts(tmp_path, 6, {"rho": Verdict("a rank correlation", 0.2, False, "rho = 0.1")})
    assert math.isnan(read_verdicts(tmp_path)[0].set_index("chapter").loc[6, "resolvable"]), "a permutation test: none"


def test_the_book_family_is_holm_over_every_chapter_and_only_removes_verdicts(tmp_path):
    estimates = {"a": _estimate(0.05, 0.01), "b": _estimate(0.03, 0.01), "c": _estimate(0.028, 0.01)}
    assert all(e.resolved for e in estimates.values())  # each resolved alone
    record_verdicts(tmp_path, 4, {"a": Verdict.of("a", estimates["a"]), "b": Verdict.of("b", estimates["b"])})
    record_verdicts(tmp_path, 5, {"c": Verdict.of("c", estimates["c"])})
    # a tiny p-value that its chapter did not call resolved (e.g. the wrong direction for its claim) stays unresolved
    record_verdicts(tmp_path, 6, {"d": Verdict("d", 1e-9, False)})
    family = book_family(read_verdicts(tmp_path)[0]).set_index("name")["book-wide"]
    expected = holm(estimates | {"d": Estimate(1.0, 0.9, 1.1, 1e-9 / 4, 5)})
    assert family["d"] == "not resolved in its chapter"
    for name in "abc":
        assert family[name] == ("stands" if expected[name] else "not resolved")
    assert set(family[list("abc")]) == {"stands", "not resolved"}  # the example exercises both outcomes


def test_a_chapter_run_again_replaces_its_record(tmp_path):
    record_verdicts(tmp_path, 5, {"old": Verdict("old", 0.5, False), "kept": Verdict("kept", 0.5, False)})
    record_verdicts(tmp_path, 5, {"new": Verdict("new", 0.01, True)})
    table, _ = read_verdicts(tmp_path)
    assert table["name"].tolist() == ["new"]


@pytest.mark.parametrize(
    ("verdicts", "error", "words"),
    [
        ({}, ValueError, "records no verdict"),
        ({"x": ("x", 0.01)}, TypeError, "Verdict.of"),
    ],
)
def test_bad_verdicts_are_refused_and_the_chapters_earlier_record_is_kept(tmp_path, verdicts, error, words):
    record_verdicts(tmp_path, 4, {"kept": Verdict("kept", 0.01, True)})
    before = verdicts_file(tmp_path, 4).read_text()
    with pytest.raises(error, match=words):
        record_verdicts(tmp_path, 4, verdicts)
    assert verdicts_file(tmp_path, 4).read_text() == before


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        (("x", math.nan, True), ValueError, r"p-value nan; it must lie in \[0, 1\]"),
        (("x", 1.5, True), ValueError, r"must lie in \[0, 1\]"),
        (("x", None, True), ValueError, "p-value None"),
        (("x", 0.01, "false"), TypeError, "must be True or False"),
        (("", 0.01, True), ValueError, "question in words"),
    ],
)
def test_a_verdict_refuses_what_it_cannot_record(fields, error, words):
    with pytest.raises(error, match=words):
        Verdict(*fields)


def test_numpy_typed_estimates_give_a_record_that_is_valid_json(tmp_path):
    e = Estimate(*(np.float64(v) for v in (0.05, 0.02, 0.08, 0.01)), df=np.float64(5))
    assert isinstance(e.resolved, np.bool_)  # what made json.dumps fail before
    record_verdicts(tmp_path, 6, {"x": Verdict.of("x", e)})
    (row,) = read_verdicts(tmp_path, chapters=(6,))[0].to_dict("records")
    assert row["resolved_in_chapter"] is True and row["p_value"] == pytest.approx(e.p_value)


def test_an_estimate_without_a_standard_error_has_no_verdict():
    with pytest.raises(ValueError, match="no finite standard error"):
        Verdict.of("x", Estimate(0.1, 0.1, 0.1))


def test_holm_refuses_p_values_outside_zero_to_one():
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        holm_p_values({"a": 0.01, "b": 1.2})


def test_each_record_carries_the_code_that_wrote_it(tmp_path):
    record_verdicts(tmp_path, 4, {"x": Verdict("x", 0.5, False)})
    assert read_verdicts(tmp_path, chapters=(4,))[0]["code_version"].tolist() == [verdicts_code_version()]


def _write_sealed(root, path, record):
    """Write a record as this program would have sealed it (the checks behind the seal are what is tested)."""
    from lora_merge_utils.integrity import folder_key, sealed

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sealed(record, folder_key(root))))


def test_a_damaged_record_names_its_file_and_the_chapter_to_run_again(tmp_path):
    path = verdicts_file(tmp_path, 6)
    _write_sealed(tmp_path, path, {"chapter": 6, "verdicts": [{"name": "x", "question": "x"}]})
    with pytest.raises(ValueError, match=r"chapter-6\.json.*run chapter 6 again"):
        read_verdicts(tmp_path)
    verdict = {"name": "x", "question": "x", "p_value": None, "resolved_in_chapter": True}
    _write_sealed(tmp_path, path, {"chapter": 6, "verdicts": [verdict]})
    with pytest.raises(ValueError, match=r"chapter-6\.json.*p-value None.*run chapter 6 again"):
        read_verdicts(tmp_path)
    record_verdicts(tmp_path, 5, {"x": Verdict("x", 0.5, False)})
    path.write_text(verdicts_file(tmp_path, 5).read_text())  # chapter 5's record under chapter 6's name
    with pytest.raises(ValueError, match=r"holds chapter 5's verdicts"):
        read_verdicts(tmp_path)


def test_the_chapters_that_the_conclusions_quote_record_their_verdicts_and_chapter_7_reads_them():
    """Each chapter that records verdicts (the chapter registry says which) calls record_verdicts with its own
    number, and no other chapter does; the last chapter reads the family the registry names."""
    for chapter in verdict_chapters():
        (path,) = ROOT.glob(f"notebooks/{chapter:02d}_*.ipynb")
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert f"record_verdicts(study.root, {chapter}," in code, path.name
    (last,) = ROOT.glob("notebooks/07_*.ipynb")
    code = "\n".join(c.source for c in nbformat.read(last, as_version=4).cells if c.cell_type == "code")
    assert "read_verdicts(study.root, chapters=verdict_chapters())" in code and "book_family(" in code
    others = [p for p in ROOT.glob("notebooks/0*.ipynb") if int(p.name[:2]) not in verdict_chapters()]
    for path in others:
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "record_verdicts(" not in code, path.name


def test_chapters_recorded_by_other_code_are_named_stale(tmp_path):
    record_verdicts(tmp_path, 4, {"x": Verdict("x", 0.5, False)})
    record_verdicts(tmp_path, 5, {"y": Verdict("y", 0.5, False)})
    path = verdicts_file(tmp_path, 5)
    _write_sealed(tmp_path, path, {**json.loads(path.read_text()), "code_version": "older-code"})
    table, _ = read_verdicts(tmp_path)
    assert stale_chapters(table) == [5]


def test_an_edit_to_the_statistics_makes_recorded_verdicts_stale(tmp_path, monkeypatch):
    """The p-values come from ``stats``: records written before an edit to it are stale, like an edit to merging."""
    import inspect

    import lora_merge_utils.stats as stats

    record_verdicts(tmp_path, 4, {"x": Verdict("x", 0.5, False)})
    table, _ = read_verdicts(tmp_path, chapters=(4,))
    assert stale_chapters(table) == []
    source = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda m: source(m) + ("\n# edited" if m is stats else ""))
    assert stale_chapters(table) == [4]


def test_an_edited_verdict_record_is_refused(tmp_path):
    """A recorded verdict turned from "not resolved" into "resolved" by an edit is not read into the book-wide table."""
    e = _estimate(0.01, 0.02)
    path = record_verdicts(tmp_path, 4, {"triples": Verdict.of("triples beat the floor", e)})
    record = json.loads(path.read_text())
    record["verdicts"][0]["resolved_in_chapter"] = True
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="chapter-4.json is not the record chapter 4 wrote: its seal does not hold"):
        read_verdicts(tmp_path)
