"""The public names: ``__all__`` lists what the package exports, and every name a chapter imports exists."""

import json
import re
from importlib import import_module
from types import ModuleType

import pytest

import lora_merge_utils

from .helpers import CHAPTERS as NOTEBOOKS
from .helpers import ROOT


def test_all_lists_exactly_the_public_names():
    """Every name in ``__all__`` resolves (the package imports them on first use), nothing else public is
    defined, and ``dir()`` shows them before any is used."""
    eager = {
        name
        for name, value in vars(lora_merge_utils).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and name not in ("PackageNotFoundError", "version")
    }
    assert eager <= set(lora_merge_utils.__all__), "a public name defined outside __all__"
    assert set(lora_merge_utils.__all__) <= set(dir(lora_merge_utils))
    for name in lora_merge_utils.__all__:
        assert getattr(lora_merge_utils, name) is not None, name
    assert {"MergeSpec", "adapter_accuracy", "merged_delta"} <= set(lora_merge_utils.__all__)
    with pytest.raises(AttributeError, match="no attribute 'merge_adapter'"):
        lora_merge_utils.merge_adapter  # noqa: B018  (a typo of merge_adapters)


def test_the_package_and_the_command_lines_help_start_without_torch():
    """``import lora_merge_utils``, ``--help``, ``list`` and a refused argument load no torch, pandas or PEFT (the
    figures: benchmarks/benchmark_cli.py)."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "import lora_merge_utils\n"
        "from lora_merge_utils.cli import main\n"
        "main(['list'])\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert main(['merge', 'digits', 'shapes', '--method', 'ties', '--profile', 'tiny']) == 2\n"
        "print('HEAVY', sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pandas', 'peft', 'timm'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert "HEAVY []" in done.stdout, done.stdout[-300:]
    assert "needs --density" in done.stderr


def _imports(source: str):
    """``(module, [names])`` of every ``from lora_merge_utils... import ...`` in a cell, parenthesised or not."""
    for module, names in re.findall(r"from (lora_merge_utils[\w.]*) import (\([^)]*\)|[^\n]*)", source):
        yield module, [n.strip() for n in re.sub(r"#.*", "", names).strip("()").split(",") if n.strip()]


def _importable(module, name: str, attribute: str) -> bool:
    """``from name import attribute`` works: an attribute, or a submodule (which is an attribute of its package only
    once something has imported it, so the answer must not depend on which tests ran before)."""
    if hasattr(module, attribute):
        return True
    try:
        import_module(f"{name}.{attribute}")
    except ImportError:
        return False
    return True


def test_every_name_the_chapters_import_exists():
    missing = []
    for notebook in NOTEBOOKS:
        for cell in json.loads(notebook.read_text())["cells"]:
            for module, names in _imports("".join(cell["source"])):
                imported = import_module(module)
                missing += [
                    f"{notebook.name}: {module}.{n}"
                    for n in names
                    if not _importable(imported, module, n.split(" as ")[0].strip())
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

    import torch

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Using the library", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    assert '"artifacts/tiny/adapters"' in code, "the example reads the folder make run writes"
    namespace: dict = {}
    exec(code.replace('"artifacts/tiny/adapters"', repr(str(shared_study / "adapters"))), namespace)  # noqa: S102
    outputs = namespace["multitask"](torch.zeros(2, 3, 32, 32))
    assert set(outputs) == {"digits", "shapes"} and outputs["digits"].shape == (2, 10)
