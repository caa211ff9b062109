"""The book's structure: every chapter has what a reader and an instructor expect, and the stored outputs are clean.
(Executing the chapters is nbval's job: `pytest --nbval-lax notebooks/`.)"""

import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from lora_merge_utils.course.exercises import EXERCISES, chapter_exercises

from .helpers import CHAPTERS, CONFIG, ROOT, load_script

pytestmark = pytest.mark.repository  # reads only the repository's own files

TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
EXECUTE = load_script("execute_notebooks")


def _toc_files():
    files = [TOC["root"]]
    for part in TOC["parts"]:
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def test_there_are_chapters_and_the_toc_lists_every_one():
    assert len(CHAPTERS) >= 5
    listed = _toc_files()
    for path in CHAPTERS:
        assert f"notebooks/{path.stem}" in listed, f"{path.name} is missing from _toc.yml"
    for entry in listed:
        assert (ROOT / f"{entry}.md").exists() or (ROOT / f"{entry}.ipynb").exists(), entry


def test_book_config_renders_committed_outputs_with_colab_buttons():
    # What `make book` (jupyter-book build) relies on; the build itself is `make book`, too slow for a unit test.
    assert CONFIG["execute"]["execute_notebooks"] == "off", "the book renders the committed outputs"
    assert CONFIG["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_structure(path):
    notebook = nbformat.read(path, as_version=4)
    cells = notebook.cells
    first = cells[0].source
    url = CONFIG["repository"]["url"].rstrip("/")
    owner_repo = url.split("github.com/")[-1]
    badge = f"colab.research.google.com/github/{owner_repo}/blob/main/notebooks/student/{path.name}"  # no solutions
    assert first.startswith("# ") and badge in first
    assert EXECUTE.time_line(path.name) in first, "the opening states the plan's T4 time (make notebooks)"
    setup = [c for c in cells if "setup" in c.metadata.get("tags", [])]
    assert len(setup) == 1 and setup[0].source == EXECUTE.setup_source(), "regenerate it with make notebooks"
    assert "hide-input" in setup[0].metadata["tags"], "readers see the setup collapsed"
    found = next(i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## What we"))
    assert "hide-input" in cells[found + 1].metadata.get("tags", []), "the glue above the findings is collapsed"
    headings = [c.source for c in cells if c.cell_type == "markdown"]
    assert any(h.startswith("## What we found") for h in headings)
    assert sum(h.startswith("## Exercises") for h in headings) == 1
    chapter = int(path.name[:2])
    exercises = [
        c for c in cells if c.cell_type == "markdown" and "exercise" in c.metadata and not c.metadata.get("tags")
    ]
    assert [c.metadata["exercise"] for c in exercises] == [e.id for e in chapter_exercises(chapter)], (
        "one markdown cell per exercise of lora_merge_utils.course.exercises, in order"
    )
    for cell in exercises:
        spec = EXERCISES[cell.metadata["exercise"]]
        assert cell.source.startswith(f"### Exercise {spec.id} *({spec.level}, {spec.points} point")
        assert "*Hint:*" in cell.source, "every exercise has a hint"
        assert (spec.variable in cell.source) == spec.checked, "a checked exercise says where its answer goes"
    solutions = [c for c in cells if "solution" in c.metadata.get("tags", [])]
    assert {c.metadata["exercise"] for c in solutions} == {c.metadata["exercise"] for c in exercises}
    assert all("remove-cell" in c.metadata["tags"] for c in solutions), "no solution reaches the public book"
    for spec in chapter_exercises(chapter):
        own = [c for c in solutions if c.metadata["exercise"] == spec.id]
        assert all(c.cell_type == ("markdown" if spec.kind == "prose" else "code") for c in own), spec.id
        checks = [c for c in cells if "check" in c.metadata.get("tags", []) and c.metadata["exercise"] == spec.id]
        assert len(checks) == spec.checked, f"exercise {spec.id}: a check cell exactly when it is checked"
        if spec.checked:
            call = rf'check_exercise\("{re.escape(spec.id)}", {spec.variable}(, .+)?\)'
            assert re.fullmatch(call, checks[0].source), checks[0].source
            assert any(f"{spec.variable} =" in c.source for c in own), "the solution stores its answer"
            assert "remove-cell" in checks[0].metadata["tags"], "no bare check cell on a public page"
    code = [c for c in cells if c.cell_type == "code"]
    assert any("NBVAL_CHECK_OUTPUT" in c.source for c in code)
    assert any(re.search(r"^\s*(assert |check\(study, )", c.source, flags=re.M) for c in code), (
        "a key result is checked (an assert where it holds by construction, check(study, ...) where it is the world's)"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_committed_executed_and_clean(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.execution_count for c in code), "execute it with `make notebooks` before committing"
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), "executed top to bottom in one run"
    for cell in code:
        for output in cell.outputs:
            assert not (output.output_type == "stream" and output.name == "stderr"), output.text[:200]
            assert output.output_type != "error"
            text = json.dumps(output)
            assert str(ROOT) not in text and str(Path.home()) + "/" not in text, "no absolute paths in outputs"


def test_setup_cell_installs_the_pinned_version_and_says_what_to_do_if_it_cannot():
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    source = EXECUTE.setup_source()
    assert f'BOOK_REF = "v{version}"' in source and 'f"git+{REPO_URL}@{BOOK_REF}"' in source
    assert f'REPO_URL = "{CONFIG["repository"]["url"].rstrip("/")}"' in source
    assert "USE_DRIVE = False" in source and "LORA_BOOK_ARTIFACTS" in source and "drive.mount" in source
    assert "raise SystemExit" in source and "BOOK_REF = 'main'" in source, "a failed install stops with one line"
    compile(source, "setup", "exec")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_chapter_moves_the_shared_backbone_or_mixes_devices(path):
    """On a GPU, a cell that moves `study.backbone` (or compares a CPU tensor with a GPU one) breaks every later cell;
    CI runs on a CPU only, so this is checked on the source."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        assert not re.search(r"backbone\.(cpu|cuda)\(\)|backbone\.to\((?!study\.device)", cell.source), cell.source
        assert ".cpu()" not in cell.source.replace("model(probe).cpu()", ""), cell.source


def _glued(path: Path) -> dict:
    """The values a stored chapter glued (``glue``), as their text."""
    values = {}
    for cell in nbformat.read(path, as_version=4).cells:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook", {})
            if record.get("name"):
                text = output["data"][record.get("mime_prefix", "") + "text/plain"]
                values[record["name"]] = text.strip("'\"")
    return values


PAGES = sorted((ROOT / "book").glob("*.md"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_every_number_a_page_pastes_is_in_the_stored_chapter(page):
    for doc, key in re.findall(r"\{glue:text\}`([^`:]+)::([A-Za-z0-9_]+):[^`]*`", page.read_text()):
        path = (page.parent / doc).resolve()
        assert path.exists(), f"{page.name} pastes from {doc}, which does not exist"
        assert key in _glued(path), f"{page.name} pastes {key!r}, which {path.name} does not glue"


def test_the_conclusions_say_what_the_stored_results_say():
    """The conclusions' sentences that are not pasted numbers (which way a trend goes, which verdict) must match the
    stored run: if a re-run changes them, this fails and the page is rewritten."""
    from lora_merge_utils.course.expectations import PUBLISHED_TASK_ARITHMETIC

    text = (ROOT / "book" / "conclusions.md").read_text()
    assert re.search(r"\{glue:text\}`\.\./notebooks/", text), "numbers are pasted from the chapters"
    numbers = re.sub(r"\{glue:text\}`[^`]*`", "", text)
    assert not re.search(r"\d+\.\d+ ?%|\d+\.\d{2,}(?! M parameters)", numbers), "no typed-in result on the page"
    answer = numbers.split("## What changed in this edition")[0]
    assert not re.search(r"\bgoal\b|\btarget\b", answer), "the answer quotes no target of ours"
    ch3, ch4 = _glued(CHAPTERS[3]), _glued(CHAPTERS[4])
    ch5, ch6 = _glued(CHAPTERS[5]), _glued(CHAPTERS[6])
    kept = [float(ch3["pairs_kept"]), float(ch4["triples_kept"]), float(ch4["k6_normalized"])]
    gain = [float(ch3["pairs_gain_kept"]), float(ch4["triples_gain_kept"]), float(ch4["k6_gain_kept"])]
    assert kept == sorted(kept, reverse=True) and gain == sorted(gain, reverse=True), "worse with every adapter added"
    assert all(g < k - 0.2 for g, k in zip(gain, kept)), "most of the accuracy and much less of the gain"
    for model in {row["model"] for row in PUBLISHED_TASK_ARITHMETIC}:
        rows = sorted((r for r in PUBLISHED_TASK_ARITHMETIC if r["model"] == model), key=lambda r: r["tasks"])
        share = [(r["task arithmetic"] - r["zero-shot"]) / (r["per-task (TSV-C)"] - r["zero-shot"]) for r in rows]
        assert share == sorted(share, reverse=True), f"published: {model} keeps less with more tasks"
    assert ch5["best_method"] in (ch5["best_free"], ch5["best_light"]), "the best is one of the validated choices"
    ahead = re.search(r"beats averaging by \+(\d\.\d+)", ch5["best_vs_average"])
    assert ahead is None or float(ahead.group(1)) < 0.02, "a cleverer method buys little"
    assert ch6["similarity_verdict"] == "not supported", "no relation resolved on 15 pairs"


def test_committed_inventories_are_what_the_script_writes(tmp_path):
    """The API pages link library types through ``book/_inventories``; the files there come from
    ``scripts/write_inventories.py`` (edit its table, then run it), and each lists what the table gives its library."""
    import zlib

    writer = load_script("write_inventories")
    written = writer.write(tmp_path)
    assert {p.name for p in written} == {p.name for p in (ROOT / "book" / "_inventories").glob("*.inv")}
    for path in written:
        assert path.read_bytes() == (ROOT / "book" / "_inventories" / path.name).read_bytes(), (
            f"book/_inventories/{path.name} is stale: run python scripts/write_inventories.py"
        )
        body = zlib.decompress(path.read_bytes().split(b"zlib.\n", 1)[1]).decode()
        names = {line.split(" ", 1)[0] for line in body.splitlines()}
        assert names == set(writer.TARGETS[path.stem][2])
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]["intersphinx_mapping"]
    assert {name: entry[1] for name, entry in config.items()} == {
        library: f"book/_inventories/{library}.inv" for library in writer.TARGETS
    }
    assert all(config[library][0] == writer.TARGETS[library][1] for library in writer.TARGETS)
