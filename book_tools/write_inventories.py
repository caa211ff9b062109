"""Write the intersphinx inventories the API pages link through: ``book/_inventories/<library>.inv``.

The official ``objects.inv`` of Python, PyTorch, NumPy, pandas and PEFT live on their documentation sites, which the
book's build (in CI, on a reader's machine without network) cannot reach; PEFT's documentation publishes none at
all. So the book carries its own small inventories: every name of those libraries that the API pages mention, with
the address of its page in that library's documentation. Sphinx reads them like the official ones
(``intersphinx_mapping`` in ``_config.yml``), so a type in a signature links to its documentation.

The book builds nitpicky (``tests/test_built_book.py``): a name missing here is a warning that fails the build, and
the fix is a line in ``TARGETS`` below, then ``python scripts/write_inventories.py``. ``tests/test_book.py`` checks
that the committed files are what this script writes.

Addresses follow each site's own layout (the same layout their own pages use): Python's ``library/<module>.html``,
PyTorch's ``generated/<name>.html``, NumPy's ``reference/generated/<name>.html``, pandas' ``reference/api/<name>.html``
and PEFT's ``package_reference/<page>``.
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "book" / "_inventories"

# library -> (project name, base address, {name autodoc uses: page relative to the base, with its anchor}).
# Every entry is a class (``py:class``), shown under its anchor, the name users import it by. Autodoc names a class
# by the module that defines it (torch.nn.modules.module.Module); the documentation by where users import it from
# (torch.nn.Module): both lead to the same page. "nn.Module" and "Path" are how autodoc leaves a class's
# constructor hints that it does not evaluate (the classes that subclass torch's Module).
TORCH_MODULE = "generated/torch.nn.Module.html#torch.nn.Module"
PATH = "library/pathlib.html#pathlib.Path"
TARGETS: dict[str, tuple[str, str, dict[str, str]]] = {
    "python": (
        "Python",
        "https://docs.python.org/3/",
        {
            "collections.Counter": "library/collections.html#collections.Counter",
            **{
                f"collections.abc.{name}": f"library/collections.abc.html#collections.abc.{name}"
                for name in ("Callable", "Iterator", "Mapping", "Sequence")
            },
            "pathlib.Path": PATH,
            "Path": PATH,
            "types.ModuleType": "library/types.html#types.ModuleType",
            "ModuleType": "library/types.html#types.ModuleType",
        },
    ),
    "torch": (
        "PyTorch",
        "https://docs.pytorch.org/docs/stable/",
        {
            "torch.Tensor": "tensors.html#torch.Tensor",
            "torch.device": "tensor_attributes.html#torch.device",
            "torch.dtype": "tensor_attributes.html#torch.dtype",
            "torch.nn.Module": TORCH_MODULE,
            "torch.nn.modules.module.Module": TORCH_MODULE,
            "nn.Module": TORCH_MODULE,
            "torch.nn.modules.linear.Linear": "generated/torch.nn.Linear.html#torch.nn.Linear",
            "torch.optim.optimizer.Optimizer": "optim.html#torch.optim.Optimizer",
            "torch.optim.lr_scheduler.LambdaLR": (
                "generated/torch.optim.lr_scheduler.LambdaLR.html#torch.optim.lr_scheduler.LambdaLR"
            ),
            "torch.utils.data.dataloader.DataLoader": "data.html#torch.utils.data.DataLoader",
            "torch.utils.data.dataset.Dataset": "data.html#torch.utils.data.Dataset",
            "torch.utils.data.dataset.TensorDataset": "data.html#torch.utils.data.TensorDataset",
        },
    ),
    "numpy": (
        "NumPy",
        "https://numpy.org/doc/stable/",
        {
            "numpy.ndarray": "reference/generated/numpy.ndarray.html#numpy.ndarray",
            "numpy.random._generator.Generator": "reference/random/generator.html#numpy.random.Generator",
        },
    ),
    "pandas": (
        "pandas",
        "https://pandas.pydata.org/docs/",
        {
            "pandas.DataFrame": "reference/api/pandas.DataFrame.html#pandas.DataFrame",
            "pandas.Series": "reference/api/pandas.Series.html#pandas.Series",
        },
    ),
    "peft": (
        "PEFT",
        "https://huggingface.co/docs/peft/",
        {
            "peft.peft_model.PeftModel": "package_reference/peft_model#peft.PeftModel",
            "peft.tuners.lora.config.LoraConfig": "package_reference/lora#peft.LoraConfig",
            "peft.tuners.lora.layer.LoraLayer": "package_reference/lora",  # LoRA's page; the layer has no anchor
        },
    ),
}


def inventory(project: str, entries: dict[str, str]) -> bytes:
    """An intersphinx inventory (format version 2) holding ``entries``, byte for byte the same on every run."""
    header = (
        f"# Sphinx inventory version 2\n# Project: {project}\n# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    ).encode()
    lines = ""
    for name, uri in sorted(entries.items()):
        shown = uri.partition("#")[2] or name
        lines += f"{name} py:class 1 {uri} {shown if shown != name else '-'}\n"
    return header + zlib.compress(lines.encode(), 9)


def write(folder: Path = FOLDER) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for library, (project, _, entries) in TARGETS.items():
        path = folder / f"{library}.inv"
        path.write_bytes(inventory(project, entries))
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=FOLDER, help="folder to write the .inv files into")
    for path in write(parser.parse_args().out):
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
