"""Draw the package's house from its imports: rooms (modules), floors, arrows, and the rooms of each wing.

A module's floor is one above the highest floor it imports from (modules importing nothing of the package stand on
floor 0), so every arrow points down; an arrow between two rooms of one floor, or up, can only come from a circle.
Imports inside functions count as arrows too: they are dependencies all the same, only deferred.

    python scripts/draw_house.py                 # this checkout's lora_merge_utils
    python scripts/draw_house.py --root OTHER    # another checkout (e.g. a worktree of an older commit)

``tests/test_house.py`` asserts the rules the drawing shows: no circle, instrumentation imports nothing of the
package, the data wing never imports course tooling, and only the command line reaches into the course wing and
the report on a practitioner's own adapters (``own_adapters``).
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

PACKAGE = "lora_merge_utils"
WINGS = ("core", "data", "course", "own_adapters", "instrumentation")


def modules(package_dir: Path) -> dict[str, Path]:
    """Dotted module names below the package (``data.tasks``, ``cli``) -> their files; ``__init__`` files excluded."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if parts[-1] != "__init__":
            found[".".join(parts)] = path
    return found


def imports(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (relative imports resolved; ``from . import x`` counts ``x``)."""
    known = modules(package_dir)
    arrows: dict[str, set[str]] = {}
    for name, path in known.items():
        here = name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                    stem = [*base, *(node.module.split(".") if node.module else [])]
                elif node.module and node.module.split(".")[0] == PACKAGE:
                    stem = node.module.split(".")[1:]
                else:
                    continue
                for alias in node.names:
                    for candidate in (".".join([*stem, alias.name]), ".".join(stem)):
                        if candidate in known:
                            targets.add(candidate)
                            break
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == PACKAGE and ".".join(parts[1:]) in known:
                        targets.add(".".join(parts[1:]))
        arrows[name] = targets - {name}
    return arrows


def wing(module: str) -> str:
    head = module.split(".")[0]
    return head if head in WINGS and "." in module else "core"


def circles(arrows: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, as the list of modules around it (empty when the house has none)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(arrows.get(node, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for node in sorted(arrows):
        if node not in state:
            visit(node, [node])
    return found


def floors(arrows: dict[str, set[str]]) -> dict[str, int]:
    """Each module's floor: 0 for modules importing nothing of the package, else one above its highest import."""
    floor: dict[str, int] = {}

    def of(node: str, seen: frozenset) -> int:
        if node not in floor:
            below = [of(t, seen | {node}) for t in arrows[node] if t not in seen]
            floor[node] = 1 + max(below) if below else 0
        return floor[node]

    for node in arrows:
        of(node, frozenset())
    return floor


def wing_arrows(arrows: dict[str, set[str]]) -> Counter:
    """(from wing, to wing) -> how many arrows cross between them."""
    return Counter((wing(a), wing(b)) for a, targets in arrows.items() for b in targets if wing(a) != wing(b))


def describe(package_dir: Path) -> str:
    arrows = imports(package_dir)
    floor = floors(arrows)
    loops = circles(arrows)
    lines = [
        f"{len(arrows)} rooms, {max(floor.values()) + 1} floors, {sum(map(len, arrows.values()))} arrows, "
        f"{len(loops)} circle(s)" + "".join(f"\n  circle: {' -> '.join(loop)}" for loop in loops),
        "",
        "wings:",
    ]
    for name in WINGS:
        rooms = sorted(m for m in arrows if wing(m) == name)
        if rooms:
            lines.append(f"  {name} ({len(rooms)}): {', '.join(rooms)}")
    lines += ["", "arrows between wings:"]
    lines += [f"  {a} -> {b}: {n}" for (a, b), n in sorted(wing_arrows(arrows).items())]
    lines += ["", "floors (top first):"]
    for level in range(max(floor.values()), -1, -1):
        lines.append(f"  {level:2d}  " + ", ".join(sorted(m for m, f in floor.items() if f == level)))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="a checkout")
    args = parser.parse_args()
    print(describe(args.root / PACKAGE))


if __name__ == "__main__":
    main()
