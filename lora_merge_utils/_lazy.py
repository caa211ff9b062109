"""Names a package offers without importing their modules until first use (PEP 562): the package's top level and its
course wing both start fast this way (``python -m lora_merge_utils --help`` loads no torch)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: dict[str, str], namespace: dict[str, Any]) -> tuple[Callable, Callable]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose ``exports`` map each public name to the submodule
    (relative to the package) that defines it; ``namespace`` is the package's ``globals()``, where a name is stored
    once loaded, so that later lookups skip ``__getattr__``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
