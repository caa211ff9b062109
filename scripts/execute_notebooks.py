"""The repository's own execute command for the chapters (``make notebooks``; ``make book`` runs it first).

    python scripts/execute_notebooks.py [notebooks/03_pairwise_merges.ipynb ...]

A full run (no notebook named) starts from cold: it deletes ``notebooks/artifacts`` so the stored outputs show what
a reader's first run shows. For each notebook: refresh the setup cell and the Colab badge from the repository URL in
``_config.yml`` (the one place it is configured), execute it top to bottom in the tiny profile with progress bars
off, check that no output went to stderr and that no absolute path of this machine leaked into an output, then write
it back atomically.
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
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
COLAB = "https://colab.research.google.com/github/{owner_repo}/blob/{branch}/notebooks/{name}"


def repository() -> tuple[str, str]:
    """``(url, branch)`` from ``_config.yml``'s ``repository`` section."""
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    return config["url"].rstrip("/"), config.get("branch", "main")


def refresh_links(notebook, name: str) -> None:
    """Point the setup cell's REPO_URL and the Colab badge at the configured repository."""
    url, branch = repository()
    owner_repo = url.split("github.com/")[-1]
    badge = COLAB.format(owner_repo=owner_repo, branch=branch, name=name)
    for cell in notebook.cells:
        if cell.cell_type == "code" and "setup" in cell.metadata.get("tags", []):
            cell.source = re.sub(r'REPO_URL = ".*"', f'REPO_URL = "{url}"', cell.source)
        if cell.cell_type == "markdown" and "colab.research.google.com" in cell.source:
            cell.source = re.sub(r"https://colab\.research\.google\.com/github/\S+?\.ipynb", badge, cell.source)


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


def execute(path: Path, timeout: int) -> float:
    notebook = nbformat.read(path, as_version=4)
    refresh_links(notebook, path.name)
    os.environ.update({"LORA_BOOK_PROFILE": "tiny", "LORA_BOOK_PROGRESS": "0", "PYTHONHASHSEED": "0",
                       "TQDM_DISABLE": "1"})
    start = time.perf_counter()
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    seconds = time.perf_counter() - start
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    parser.add_argument("--keep-artifacts", action="store_true",
                        help="reuse notebooks/artifacts (by default a full run starts from cold, as a new reader does)")
    args = parser.parse_args()
    paths = args.notebooks or sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    if not args.notebooks and not args.keep_artifacts:
        # Stored outputs show what a reader's first run shows: training included.
        shutil.rmtree(NOTEBOOKS / "artifacts", ignore_errors=True)
    total = 0.0
    for path in paths:
        seconds = execute(path.resolve(), args.timeout)
        total += seconds
        print(f"{path.name}: {seconds:.0f} s", flush=True)
    print(f"all {len(paths)} notebooks: {total:.0f} s", file=sys.stdout)


if __name__ == "__main__":
    main()
