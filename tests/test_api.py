"""The public names: ``__all__`` lists what the package exports, and every name a chapter imports exists."""

import json
import re
from importlib import import_module
from pathlib import Path
from types import ModuleType

import lora_merge_utils

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.ipynb"))


def test_all_lists_exactly_the_public_names():
    public = {
        name
        for name, value in vars(lora_merge_utils).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and name not in ("PackageNotFoundError", "version")
    }
    assert set(lora_merge_utils.__all__) == public
    assert {"MergeSpec", "adapter_accuracy", "merged_delta"} <= public


def _imports(source: str):
    """``(module, [names])`` of every ``from lora_merge_utils... import ...`` in a cell, parenthesised or not."""
    for module, names in re.findall(r"from (lora_merge_utils[\w.]*) import (\([^)]*\)|[^\n]*)", source):
        yield module, [n.strip() for n in re.sub(r"#.*", "", names).strip("()").split(",") if n.strip()]


def test_every_name_the_chapters_import_exists():
    missing = []
    for notebook in NOTEBOOKS:
        for cell in json.loads(notebook.read_text())["cells"]:
            for module, names in _imports("".join(cell["source"])):
                imported = import_module(module)
                missing += [
                    f"{notebook.name}: {module}.{n}" for n in names if not hasattr(imported, n.split(" as ")[0].strip())
                ]
    assert not missing


def test_every_package_attribute_the_chapters_use_exists():
    used = {name for notebook in NOTEBOOKS for name in re.findall(r"\blmu\.(\w+)", notebook.read_text())}
    assert used, "the chapters import the package as lmu"
    assert not [name for name in used if not hasattr(lora_merge_utils, name)]


def test_the_readmes_library_example_runs_on_a_real_study_folder(shared_study):
    """The README's Python example, run as written against a study's real ``adapters/<task>/seed-<k>`` layout (the
    session's small study stands in for ``artifacts/tiny``): a stale path or name in it fails here."""
    import re
    from pathlib import Path

    import torch

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Using the library", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    assert '"artifacts/tiny/adapters"' in code, "the example reads the folder make run writes"
    namespace: dict = {}
    exec(code.replace('"artifacts/tiny/adapters"', repr(str(shared_study / "adapters"))), namespace)  # noqa: S102
    outputs = namespace["multitask"](torch.zeros(2, 3, 32, 32))
    assert set(outputs) == {"digits", "shapes"} and outputs["digits"].shape == (2, 10)
