"""The repository's own execute command for the chapters (``make notebooks``; ``make book`` runs it first), and the
full-profile smoke run of every chapter (``make smoke``; the test suite runs it too).

    python scripts/execute_notebooks.py [notebooks/03_pairwise_merges.ipynb ...]
    python scripts/execute_notebooks.py --full-smoke [DIR]

A tiny run (the default) starts from cold: it deletes ``notebooks/artifacts`` so the stored outputs show what a
reader's first run shows. For each notebook it regenerates the setup cell, the Colab badge and the expected T4 time
(from the repository URL and version, and from :mod:`lora_merge_utils.course.plan`), executes it top to bottom in the
tiny profile with progress bars off, checks that no output went to stderr and that no absolute path of this machine
leaked into an output, then writes it back atomically.

A full-smoke run executes every chapter in order in the ``full`` profile against offline stand-ins
(:mod:`lora_merge_utils.data.standins`) on this machine's CPU, sharing one artifact folder as Google Drive would, and
writes nothing back. It prints each chapter's time and the work it did (images decoded, trained, evaluated, merges).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import tomllib
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PAGES = (ROOT / "book" / "your_own_adapters.ipynb",)
"""Notebook pages of the book that are not chapters: executed with them in the tiny profile, but with no badge, no
time plan and no exercises; their setup cell only installs the package where it is missing (:data:`PAGE_SETUP`)."""
COLAB = "https://colab.research.google.com/github/{owner_repo}/blob/{branch}/notebooks/{name}"
TIME_MARK = "**Time on a Colab T4**"
WORK_MARK = "LORA_BOOK_WORK "

SETUP = """\
# Setup. On Colab: check for a GPU, install this book's package at the version these pages were made with (Colab's
# own torch is kept) and keep trained adapters and the datasets' samples on Google Drive, so that every chapter
# opened later, on a fresh runtime, starts from what earlier chapters trained and downloaded instead of doing it again
# (a chapter opened first trains what it needs; `plan --profile full` gives both times). Colab asks once per runtime
# for access to Drive; to decline, set USE_DRIVE = False: everything then stays on this runtime's disk and goes with
# it. Everywhere: pick the profile (tiny on a CPU, full on a Colab GPU) and say what this run uses.
import importlib.util
import os
import subprocess
import sys

USE_DRIVE = True  # False: no Google Drive; this runtime's disk only
PACKAGE = {package}  # this book's package on PyPI ({package_note})
REPO_URL = "{url}"  # forks: see scripts/set_repository.py
BOOK_REF = "{ref}"  # the tag these pages were made with; "main" for the newest code
DRIVE = "/content/drive/MyDrive/lora-merge-book"

if "google.colab" in sys.modules:
    import torch

    if not torch.cuda.is_available():
        print("\u26a0 This runtime has no GPU, so this chapter will run the small offline (tiny) profile on the CPU. "
              "For the real datasets and ViT-B/16: Runtime > Change runtime type > T4 GPU, then Runtime > Run all.")
    if USE_DRIVE:
        from google.colab import drive

        drive.mount("/content/drive")
        os.environ["LORA_BOOK_ARTIFACTS"] = DRIVE
    elif os.environ.get("LORA_BOOK_ARTIFACTS") == DRIVE:
        del os.environ["LORA_BOOK_ARTIFACTS"]  # Drive switched off again: this runtime's disk from now on
    if importlib.util.find_spec("lora_merge_utils") is None:
        sources, failures = [s for s in (PACKAGE, f"git+{{REPO_URL}}@{{BOOK_REF}}", f"git+{{REPO_URL}}@main") if s], []
        for source in sources:  # PyPI first, then the repository's tag, then its newest code
            pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], capture_output=True, text=True)
            if pip.returncode == 0:
                print(f"installed {{source}}")
                break
            said = pip.stderr.strip().splitlines()  # the cause ("fatal: repository ... not found"), not the trailer
            why = [line for line in said if "fatal:" in line or "ERROR:" in line or "error: pathspec" in line]
            failures.append(f"pip install {{source}}:\\n" + "\\n".join((why or said)[-4:]))
        else:
            raise SystemExit("Could not install lora_merge_utils. pip said:\\n" + "\\n".join(failures) + "\\nCheck "
                             "that this runtime has internet access (or set BOOK_REF = 'main'), then run this again.")

import lora_merge_utils as lmu  # noqa: E402
from lora_merge_utils.course import check, check_exercise, glue  # noqa: E402, F401  (one setup for every chapter)

study = lmu.Study.open()  # profile from $LORA_BOOK_PROFILE, else full on a Colab GPU, else tiny
print(study.describe())
if os.environ.get("LORA_BOOK_ARTIFACTS") == DRIVE:
    print(lmu.storage_report(DRIVE))  # what this book keeps on Drive, and how much space it takes"""
"""The setup cell of every chapter (``{package}``, ``{package_note}``, ``{url}`` and ``{ref}`` filled in by
:func:`setup_source`). It is the one cell a Colab student runs before the package exists, so it carries the install
itself: the pinned version from PyPI, else the repository's tag, else its newest code, and pip's own lines that say
why when all three fail (git's ``fatal:`` and ``error: pathspec`` lines and pip's ``ERROR:`` lines: a git failure
ends with "exit code: 128 / See above for output", which hides the cause)."""


PAGE_SETUP = """\
# Setup. Where this book's package is missing (on Colab, say), install it at the version these pages were made with.
import importlib.util
import subprocess
import sys

PACKAGE = {package}  # this book's package on PyPI ({package_note})
REPO_URL = "{url}"  # forks: see scripts/set_repository.py
BOOK_REF = "{ref}"  # the tag these pages were made with
if importlib.util.find_spec("lora_merge_utils") is None:
    source = PACKAGE or f"git+{{REPO_URL}}@{{BOOK_REF}}"  # a fork installs its own code
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)"""
"""The setup cell of a page (:data:`PAGES`), filled in as :data:`SETUP` is."""


def repository() -> tuple[str, str]:
    """``(url, branch)`` from ``_config.yml``'s ``repository`` section."""
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    return config["url"].rstrip("/"), config.get("branch", "main")


def book_ref() -> str:
    """The tag the setup cells install: ``v`` + the package version in ``pyproject.toml``."""
    return "v" + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def package_on_index() -> bool:
    """Whether this repository's version tags are published to PyPI (``repository.package_index`` in
    ``_config.yml``; :mod:`scripts.set_repository` turns it off for a fork, which installs from its own code)."""
    import yaml

    return bool(yaml.safe_load((ROOT / "_config.yml").read_text())["repository"].get("package_index", False))


def setup_source(template: str = SETUP) -> str:
    """``template`` (a chapter's setup cell, or :data:`PAGE_SETUP`) for this repository and version."""
    url, _ = repository()
    version = book_ref().removeprefix("v")
    if package_on_index():
        package, note = f'"lora-merge-utils=={version}"', "published by .github/workflows/release.yml"
    else:
        package, note = "None", "not used: this repository installs from its own code below"
    return template.format(url=url, ref=book_ref(), package=package, package_note=note)


def time_line(name: str) -> str:
    """The chapter's expected time on a Colab T4, from the plan of the full profile."""
    from lora_merge_utils.course.plan import chapter_plan

    row = chapter_plan("full").set_index("notebook").loc[name]
    return (
        f"{TIME_MARK} (full profile, from `python -m lora_merge_utils plan --profile full`): about "
        f"{row['warm_minutes']:.0f} min when earlier chapters' artifacts are kept on Drive, "
        f"{row['alone_minutes']:.0f} min on a fresh runtime."
    )


def colab_url(name: str) -> str:
    """The *Open in Colab* address of chapter ``name`` in the repository and branch of ``_config.yml``: its student
    copy (``notebooks/student/``), which holds no solution, since the badge is on every public page."""
    url, branch = repository()
    return COLAB.format(owner_repo=url.split("github.com/")[-1], branch=branch, name=f"student/{name}")


COLAB_GPU = {"accelerator": "GPU", "colab": {"gpuType": "T4"}}
"""Notebook metadata that makes Colab open a chapter on a GPU runtime (a T4, the free tier's)."""


def refresh_links(notebook, name: str) -> bool:
    """Regenerate a chapter's setup cell, Colab badge and GPU request from ``_config.yml``; return whether anything
    changed.

    Executes nothing and needs no plan, so ``scripts/set_repository.py`` can point the committed notebooks at
    another repository (a fork) without re-running them.
    """
    badge, setup = colab_url(name), setup_source()
    before = json.dumps(notebook.metadata, sort_keys=True)
    notebook.metadata["accelerator"] = COLAB_GPU["accelerator"]
    notebook.metadata.setdefault("colab", {}).update(COLAB_GPU["colab"])
    changed = json.dumps(notebook.metadata, sort_keys=True) != before
    for cell in notebook.cells:
        source = cell.source
        if cell.cell_type == "code" and "setup" in cell.metadata.get("tags", []):
            cell.source = setup
        if cell.cell_type == "markdown" and "colab.research.google.com" in cell.source:
            cell.source = re.sub(r"https://colab\.research\.google\.com/github/\S+?\.ipynb", badge, cell.source)
        changed |= cell.source != source
    return set_reader_tags(notebook) or changed


def set_reader_tags(notebook) -> bool:
    """What a reader of the published pages sees: the setup cell and the code that writes "What we found" collapsed
    (``hide-input``: one click shows them), and no check cell of an exercise whose solution the page leaves out
    (``remove-cell``; the student and instructor editions show them). Returns whether a tag changed."""
    changed = False
    cells = notebook.cells
    found = next(
        (i + 1 for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## What we found")),
        None,
    )
    for index, cell in enumerate(cells):
        tags = list(cell.metadata.get("tags", []))
        wanted = tags
        if cell.cell_type == "code" and ("setup" in tags or index == found):
            wanted = tags + ["hide-input"] if "hide-input" not in tags else tags
        if "check" in tags:
            wanted = [t for t in tags if t != "remove-output"] + (["remove-cell"] if "remove-cell" not in tags else [])
        if wanted != tags:
            cell.metadata["tags"] = wanted
            changed = True
    return changed


def refresh_page(notebook) -> bool:
    """Regenerate a page's setup cell from ``_config.yml`` and the package version; return whether it changed."""
    changed = False
    for cell in notebook.cells:
        if cell.cell_type == "code" and "setup" in cell.metadata.get("tags", []):
            source, cell.source = cell.source, setup_source(PAGE_SETUP)
            changed |= cell.source != source
    return changed


def refresh(notebook, name: str) -> None:
    """Regenerate the setup cell, the Colab badge and the expected T4 time of a chapter."""
    refresh_links(notebook, name)
    title = notebook.cells[0]
    lines = [line for line in title.source.split("\n") if not line.startswith(TIME_MARK)]
    badge_line = next(i for i, line in enumerate(lines) if "colab-badge" in line)
    title.source = "\n".join(lines[: badge_line + 1] + ["", time_line(name)] + lines[badge_line + 1 :]).replace(
        "\n\n\n", "\n\n"
    )


def check_outputs(notebook, name: str) -> list[str]:
    """Problems a reader would see: stderr output, warnings, absolute paths of this machine."""
    problems = []
    home = str(Path.home())
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                problems.append(f"{name} cell {index}: stderr output: {output.get('text', '')[:200]!r}")
            text = json.dumps(output)
            for path in {str(ROOT), home}:
                if path != "/" and path in text:
                    problems.append(f"{name} cell {index}: output contains the absolute path {path}")
    return problems


def run(notebook, directory: Path, env: dict[str, str], timeout: int) -> float:
    """Execute ``notebook`` in a fresh kernel started in ``directory`` with ``env``; return the seconds it took."""
    start = time.perf_counter()
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(directory)}}
    )
    client.execute(env=env)
    return time.perf_counter() - start


TINY_ENV = {"LORA_BOOK_PROFILE": "tiny", "LORA_BOOK_PROGRESS": "0", "PYTHONHASHSEED": "0", "TQDM_DISABLE": "1"}


def execute(path: Path, timeout: int) -> float:
    """Refresh, execute in the tiny profile and write back one chapter or page."""
    notebook = nbformat.read(path, as_version=4)
    if path in PAGES:
        refresh_page(notebook)
    else:
        refresh(notebook, path.name)
    env = {key: value for key, value in os.environ.items() if not key.startswith("LORA_BOOK_")} | TINY_ENV
    seconds = run(notebook, path.parent, env, timeout)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    notebook.metadata.pop("widgets", None)
    problems = check_outputs(notebook, path.name)
    if problems:
        raise SystemExit("\n".join(problems))
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".ipynb.tmp")
    os.close(fd)
    nbformat.write(notebook, tmp)
    os.replace(tmp, path)
    return seconds


def smoke_environment(directory: Path, standins: Path | None = None) -> dict[str, str]:
    """The environment of a full-profile smoke run whose artifacts live under ``directory``, and its stand-ins too
    unless ``standins`` names a folder of them (built there if missing, so that several runs share one build)."""
    from lora_merge_utils.data.standins import build_standins

    env = build_standins(standins or directory / "standins")
    base = {key: value for key, value in os.environ.items() if not key.startswith("LORA_BOOK_")}
    return (
        base
        | env
        | {
            "LORA_BOOK_PROFILE": "full",
            "LORA_BOOK_ARTIFACTS": str(directory / "artifacts"),
            "LORA_BOOK_PROGRESS": "0",
            "TQDM_DISABLE": "1",
            "PYTHONHASHSEED": "0",
        }
    )


def smoke_chapter(path: Path, env: dict[str, str], timeout: int) -> tuple[float, dict[str, int], object]:
    """Execute one chapter in the full-profile smoke run: ``(seconds, work tallies, executed notebook)``."""
    notebook = nbformat.read(path, as_version=4)
    tally = (
        "import json\nfrom lora_merge_utils.instrumentation.workload import work_done\n"
        f"print({WORK_MARK!r} + json.dumps(work_done()))"
    )
    notebook.cells.append(nbformat.v4.new_code_cell(tally))
    seconds = run(notebook, Path(env["LORA_BOOK_ARTIFACTS"]).parent, env, timeout)
    text = "".join(output.get("text", "") for output in notebook.cells[-1].outputs)
    work = json.loads(text.split(WORK_MARK, 1)[1])
    return seconds, work, notebook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="default: every chapter (notebooks/*.ipynb), then the notebook pages"
    )
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    parser.add_argument(
        "--times",
        type=Path,
        default=None,
        metavar="FILE",
        help="write each chapter's seconds to FILE as JSON (benchmarks/benchmark_limit.py --measured reads it)",
    )
    parser.add_argument(
        "--keep-artifacts",
        action="store_true",
        help="reuse notebooks/artifacts (by default a full run starts from cold, as a new reader does)",
    )
    parser.add_argument(
        "--full-smoke",
        type=Path,
        nargs="?",
        const=Path("artifacts/full-smoke"),
        default=None,
        metavar="DIR",
        help="run the chapters in the full profile against stand-ins under DIR "
        "(default artifacts/full-smoke) instead; nothing is written back",
    )
    args = parser.parse_args()
    chapters = sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    paths = [p.resolve() for p in args.notebooks] or (chapters if args.full_smoke is not None else chapters + [*PAGES])
    total, times = 0.0, {}
    if args.full_smoke is not None:
        directory = args.full_smoke.resolve()
        shutil.rmtree(directory / "artifacts", ignore_errors=True)
        env = smoke_environment(directory)
        for path in paths:
            seconds, work, _ = smoke_chapter(path, env, args.timeout)
            total += seconds
            times[path.name] = round(seconds, 1)
            print(f"{path.name}: {seconds:.0f} s, work {json.dumps(work)}", flush=True)
    else:
        if not args.notebooks and not args.keep_artifacts:
            # Stored outputs show what a reader's first run shows: training included.
            shutil.rmtree(NOTEBOOKS / "artifacts", ignore_errors=True)
        for path in paths:
            seconds = execute(path, args.timeout)
            total += seconds
            times[path.name] = round(seconds, 1)
            print(f"{path.name}: {seconds:.0f} s", flush=True)
    print(f"all {len(paths)} notebooks: {total:.0f} s", file=sys.stdout)
    if args.times is not None:
        args.times.write_text(json.dumps(times, indent=1) + "\n")


if __name__ == "__main__":
    main()
