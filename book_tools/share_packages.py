"""Give the Colab-versions environment (``.venv-colab``) this environment's torch, by hard links, before pip fills in
Colab's other versions.

    .venv/bin/python scripts/share_packages.py .venv-colab requirements/colab.txt --pins .venv-colab/pins.txt

Two environments that each hold a CUDA build of torch need about 12 GB, and CI machines have been seen with 8 GB
free. So ``.venv-colab`` takes torch and torchvision from ``.venv`` (this project's pins), with everything they need
that Colab does not pin at another version (the CUDA libraries, triton), and every other distribution that Colab pins
at the very version ``.venv`` holds. Each file is a hard link, so the shared packages cost no disk; pip later replaces
a file by writing a new one, never in place, so neither environment can change the other.

What is left to pip is written to ``--pins``: Colab's pins without torch and torchvision, whose versions are
``.venv``'s. The price: the Colab-versions tests run every package at Colab's version but those two.

Run it with ``.venv``'s Python: it reads that environment's installed distributions.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

SHARED_ROOTS = ("torch", "torchvision")
"""Shared whatever version Colab pins: the packages whose CUDA builds are the disk's whole problem."""


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file, by canonical name."""
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def installed_distributions(path: list[str] | None = None) -> dict[str, metadata.Distribution]:
    """The distributions on ``path`` (default: this interpreter's), by canonical name."""
    found = metadata.distributions() if path is None else metadata.distributions(path=path)
    return {canonicalize_name(dist.metadata["Name"]): dist for dist in found}


def dependency_closure(roots: tuple[str, ...], installed: dict[str, metadata.Distribution]) -> set[str]:
    """The roots and everything they need here: markers evaluated for this machine, and the extras a requirement
    asks for followed (torch asks for ``cuda-toolkit[cublas,cufft,...]``, whose libraries are the extras)."""
    seen: set[tuple[str, str]] = set()
    todo = [(canonicalize_name(root), "") for root in roots]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen or name not in installed:
            continue
        seen.add((name, extra))
        for line in installed[name].requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                needed = canonicalize_name(requirement.name)
                todo += [(needed, "")] + [(needed, wanted) for wanted in sorted(requirement.extras)]
    return {name for name, _ in seen}


def to_share(pins: dict[str, str], installed: dict[str, metadata.Distribution]) -> list[str]:
    """The distributions the Colab environment takes from this one, by canonical name."""
    roots = {canonicalize_name(root) for root in SHARED_ROOTS}
    torch_stack = dependency_closure(SHARED_ROOTS, installed)
    chosen = []
    for name, dist in sorted(installed.items()):
        pinned = pins.get(name)
        if name in roots or pinned == dist.version or (name in torch_stack and pinned is None):
            chosen.append(name)
    return chosen


def link_distribution(dist: metadata.Distribution, source: Path, target: Path) -> int:
    """Hard-link every file of ``dist`` that lies in ``source`` (site-packages) into ``target``; returns bytes
    shared. Files outside site-packages (console scripts, whose first line names this environment's Python) are left
    to pip."""
    shared = 0
    for entry in dist.files or []:
        path = Path(os.path.normpath(source / entry))
        if source not in path.parents or not path.is_file():
            continue
        destination = target / path.relative_to(source)
        if destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, destination)
        shared += path.stat().st_size
    return shared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("environment", type=Path, help="the environment to fill (made with python -m venv)")
    parser.add_argument("pins", type=Path, help="Colab's pins (requirements/colab.txt)")
    parser.add_argument("--pins-out", type=Path, required=True, help="where to write what is left to pip")
    args = parser.parse_args(argv)

    source = Path(sysconfig.get_paths()["purelib"]).resolve()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    target = (args.environment / "lib" / version / "site-packages").resolve()
    if not target.is_dir():
        parser.error(f"{args.environment} is not a {version} environment: make it with python -m venv first")
    if target == source:
        parser.error("run this with the Python of the environment to share from (.venv), not of the one to fill")
    if os.stat(source).st_dev != os.stat(target).st_dev:
        parser.error(f"{source} and {target} are on different file systems: hard links cannot join them")

    pins = read_pins(args.pins)
    installed = installed_distributions()
    missing = [root for root in SHARED_ROOTS if canonicalize_name(root) not in installed]
    if missing:
        parser.error(f"this environment has no {', '.join(missing)}: make setup installs them")
    names = to_share(pins, installed)
    shared = sum(link_distribution(installed[name], source, target) for name in names)

    roots = {canonicalize_name(root) for root in SHARED_ROOTS}
    kept = [
        line
        for line in args.pins.read_text().splitlines()
        if not (re.match(r"\s*([A-Za-z0-9_.-]+)", line) and canonicalize_name(line.split("==")[0].strip()) in roots)
    ]
    args.pins_out.write_text("\n".join(kept) + "\n")
    versions = ", ".join(f"{root} {installed[canonicalize_name(root)].version}" for root in SHARED_ROOTS)
    print(
        f"shared {len(names)} distributions ({shared / 2**30:.1f} GB, by hard link) with {args.environment}: {versions}"
    )
    return 0
