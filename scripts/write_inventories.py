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

# library -> (project name, base address, {name autodoc uses: (role, page relative to the base, name shown)}).
# Autodoc names a class by the module that defines it (torch.nn.modules.module.Module); the documentation by where
# users import it from (torch.nn.Module): both lead to the same page. "nn.Module" and "Path" are how autodoc leaves a
# class's constructor hints that it does not evaluate (the classes that subclass torch's Module).
TARGETS: dict[str, tuple[str, str, dict[str, tuple[str, str, str]]]] = {
    "python": (
        "Python",
        "https://docs.python.org/3/",
        {
            "collections.Counter": ("py:class", "library/collections.html#collections.Counter", "collections.Counter"),
            **{
                f"collections.abc.{name}": (
                    "py:class",
                    f"library/collections.abc.html#collections.abc.{name}",
                    f"collections.abc.{name}",
                )
                for name in ("Callable", "Iterator", "Mapping", "Sequence")
            },
            "pathlib.Path": ("py:class", "library/pathlib.html#pathlib.Path", "pathlib.Path"),
            "Path": ("py:class", "library/pathlib.html#pathlib.Path", "pathlib.Path"),
        },
    ),
    "torch": (
        "PyTorch",
        "https://docs.pytorch.org/docs/stable/",
        {
            "torch.Tensor": ("py:class", "tensors.html#torch.Tensor", "torch.Tensor"),
            "torch.device": ("py:class", "tensor_attributes.html#torch.device", "torch.device"),
            "torch.dtype": ("py:class", "tensor_attributes.html#torch.dtype", "torch.dtype"),
            "torch.nn.Module": ("py:class", "generated/torch.nn.Module.html#torch.nn.Module", "torch.nn.Module"),
            "torch.nn.modules.module.Module": (
                "py:class",
                "generated/torch.nn.Module.html#torch.nn.Module",
                "torch.nn.Module",
            ),
            "nn.Module": ("py:class", "generated/torch.nn.Module.html#torch.nn.Module", "torch.nn.Module"),
            "torch.nn.modules.linear.Linear": (
                "py:class",
                "generated/torch.nn.Linear.html#torch.nn.Linear",
                "torch.nn.Linear",
            ),
            "torch.optim.optimizer.Optimizer": (
                "py:class",
                "optim.html#torch.optim.Optimizer",
                "torch.optim.Optimizer",
            ),
            "torch.optim.lr_scheduler.LambdaLR": (
                "py:class",
                "generated/torch.optim.lr_scheduler.LambdaLR.html#torch.optim.lr_scheduler.LambdaLR",
                "torch.optim.lr_scheduler.LambdaLR",
            ),
            "torch.utils.data.dataloader.DataLoader": (
                "py:class",
                "data.html#torch.utils.data.DataLoader",
                "torch.utils.data.DataLoader",
            ),
            "torch.utils.data.dataset.Dataset": (
                "py:class",
                "data.html#torch.utils.data.Dataset",
                "torch.utils.data.Dataset",
            ),
        },
    ),
    "numpy": (
        "NumPy",
        "https://numpy.org/doc/stable/",
        {
            "numpy.ndarray": ("py:class", "reference/generated/numpy.ndarray.html#numpy.ndarray", "numpy.ndarray"),
            "numpy.random._generator.Generator": (
                "py:class",
                "reference/random/generator.html#numpy.random.Generator",
                "numpy.random.Generator",
            ),
        },
    ),
    "pandas": (
        "pandas",
        "https://pandas.pydata.org/docs/",
        {
            "pandas.DataFrame": (
                "py:class",
                "reference/api/pandas.DataFrame.html#pandas.DataFrame",
                "pandas.DataFrame",
            ),
            "pandas.Series": ("py:class", "reference/api/pandas.Series.html#pandas.Series", "pandas.Series"),
        },
    ),
    "peft": (
        "PEFT",
        "https://huggingface.co/docs/peft/",
        {
            "peft.peft_model.PeftModel": ("py:class", "package_reference/peft_model#peft.PeftModel", "peft.PeftModel"),
            "peft.tuners.lora.config.LoraConfig": (
                "py:class",
                "package_reference/lora#peft.LoraConfig",
                "peft.LoraConfig",
            ),
            "peft.tuners.lora.layer.LoraLayer": ("py:class", "package_reference/lora", "peft LoRA layers"),
        },
    ),
}


def inventory(project: str, entries: dict[str, tuple[str, str, str]]) -> bytes:
    """An intersphinx inventory (format version 2) holding ``entries``, byte for byte the same on every run."""
    header = (
        f"# Sphinx inventory version 2\n# Project: {project}\n# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    ).encode()
    lines = "".join(
        f"{name} {role} 1 {uri} {shown if shown != name else '-'}\n"
        for name, (role, uri, shown) in sorted(entries.items())
    )
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
