"""Write the student version of the chapters: solution cells replaced by a prompt, every output cleared.

    python scripts/make_student.py            # -> notebooks/student/*.ipynb

Solutions are the code cells tagged ``solution`` in ``notebooks/*.ipynb``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
STUB = "# Your solution here\n"


def student_version(notebook):
    """A copy of ``notebook`` with solution cells stubbed and outputs cleared."""
    notebook = nbformat.from_dict(notebook)
    cells = []
    for cell in notebook.cells:
        if "solution" in cell.metadata.get("tags", []):
            cell = nbformat.v4.new_code_cell(STUB)
        elif cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cells.append(cell)
    notebook.cells = cells
    return notebook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "notebooks" / "student")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        notebook = student_version(nbformat.read(path, as_version=4))
        nbformat.write(notebook, args.out / path.name)
        print(f"{args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}/{path.name}")


if __name__ == "__main__":
    main()
