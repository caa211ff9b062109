"""The house drawn from the package's imports (``scripts/draw_house.py``) keeps the rules its drawing shows."""

from __future__ import annotations

from .helpers import ROOT, load_script

house = load_script("draw_house")
ARROWS = house.imports(ROOT / "lora_merge_utils")


def test_no_import_circle():
    assert house.circles(ARROWS) == []


def test_the_drawing_finds_a_circle_and_resolves_relative_imports(tmp_path):
    """The checks below could not fail if the reader of imports missed arrows: a made-up package with a circle."""
    package = tmp_path / house.PACKAGE
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("")
    (package / "core.py").write_text("from .data.tasks import load\n")
    (package / "data" / "tasks.py").write_text("def load():\n    from ..core import x\n")
    arrows = house.imports(package)
    assert arrows == {"core": {"data.tasks"}, "data.tasks": {"core"}}
    assert house.circles(arrows) == [["core", "data.tasks", "core"]]


def test_every_wing_has_its_rooms():
    wings = {house.wing(module) for module in ARROWS}
    assert wings == set(house.WINGS)
    assert {"data.tasks", "data.hub", "data.generated", "data.hub_sources"} <= set(ARROWS)
    assert {"course.exercises", "course.grading", "course.plan"} <= set(ARROWS)


def test_instrumentation_depends_on_nothing_but_itself():
    """Training, batching and merging count their work; the counters must not pull the library in."""
    for module, targets in ARROWS.items():
        if house.wing(module) == "instrumentation":
            assert {house.wing(t) for t in targets} <= {"instrumentation"}, module


def test_course_tooling_is_reached_only_from_the_command_line():
    """The library works without the course around it: only ``cli`` (``plan``, ``grade``) imports the course wing."""
    for module, targets in ARROWS.items():
        if house.wing(module) != "course":
            reached = {t for t in targets if house.wing(t) == "course"}
            assert not reached or module == "cli", f"{module} imports {reached}"


def test_the_top_level_re_exports_no_course_name():
    """The top level's lazy names are strings the drawing cannot see: were one of them a course module's, "only the
    command line imports course" would hold on paper only. The course wing offers its own (``lora_merge_utils.course``),
    and the course's book policy (checks, verdicts) lives there, not in the study."""
    import lora_merge_utils
    import lora_merge_utils.course as course
    from lora_merge_utils.study import Study

    assert not [name for name, module in lora_merge_utils._EXPORTS.items() if module.startswith("course")]
    assert not {"glue", "check_exercise", "EXPECTED", "Verdict", "record_verdicts"} & set(dir(lora_merge_utils))
    for name in course.__all__:
        assert getattr(course, name) is not None, name
    assert {"check", "glue", "check_exercise", "record_verdicts", "book_family"} <= set(course.__all__)
    assert not hasattr(Study, "check") and not hasattr(Study, "expects_real_results")
    assert "verdicts" not in ARROWS and "course.verdicts" in ARROWS and "course.checks" in ARROWS


def test_the_report_on_own_adapters_is_reached_only_from_the_command_line_and_needs_no_course():
    """``own_adapters`` stands on the core like a user's own code would: the library never depends on it, and it
    uses nothing of the book's course wing."""
    for module, targets in ARROWS.items():
        reached = {t for t in targets if house.wing(t) == "own_adapters"}
        if house.wing(module) != "own_adapters":
            assert not reached or module == "cli", f"{module} imports {reached}"
        else:
            assert not {t for t in targets if house.wing(t) == "course"}, module


def test_data_never_imports_the_study_or_merging():
    """Tasks load without the merging half of the library: data imports only the profile, batching and storage."""
    for module, targets in ARROWS.items():
        if house.wing(module) == "data":
            core = {t for t in targets if house.wing(t) == "core"}
            assert core <= {"profiles", "batches", "artifacts", "backbone", "safe_io"}, f"{module} imports {core}"
