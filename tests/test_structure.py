"""The house points one way: no import cycle between modules, no import from a lower layer to
a higher one, and no Flower below the app layer (docs/architecture.md §1). Every `fedsynth` import
counts, including the lazy ones inside functions: a cycle through a lazy import is still a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import fedsynth

PACKAGE = Path(fedsynth.__file__).parent
# Lowest first. A module may import its own layer's modules (acyclically) and lower layers.
LAYERS: list[tuple[str, ...]] = [
    (
        "atomic",
        "flat",
        "instruction",
        "reply_metrics",
        "data",
        "strategies",
        "pretrained",
        "transport",
    ),
    ("models",),
    ("privacy",),
    ("training", "evaluation"),
    ("config",),
    ("client", "server", "deploy", "export"),
    ("audit",),
    ("simulations",),
    ("cli",),
]
FLOWER_FREE = (
    "atomic",
    "flat",
    "instruction",
    "reply_metrics",
    "data",
    "models",
    "privacy",
    "training",
    "evaluation",
    "config",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """Every module of the package `path` imports, resolved to a module file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name.startswith("fedsynth"):
                while name not in known:  # `from pkg import name` where name is not a module
                    name = name.rsplit(".", 1)[0]
                found.add(name)
    return found


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module}: no layer assigned; add its package to LAYERS")


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports(p, known) - {m, "fedsynth"} for m, p in mods.items() if m != "fedsynth"}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of modules as a list, or None (iterative DFS with colours)."""
    colour = dict.fromkeys(edges, 0)
    for start in edges:
        if colour[start]:
            continue
        stack = [(start, iter(sorted(edges[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(child, 2) == 1:
                return path[path.index(child) :] + [child]
            elif colour.get(child) == 0:
                colour[child] = 1
                stack.append((child, iter(sorted(edges[child]))))
                path.append(child)
    return None


def test_no_import_cycle() -> None:
    assert find_cycle(graph()) is None, f"import cycle: {' -> '.join(find_cycle(graph()))}"


def test_no_upward_import() -> None:
    upward = [
        f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
        for m, targets in graph().items()
        for t in targets
        if layer(t) > layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_layers_below_the_apps_do_not_import_flower() -> None:
    offenders = []
    for module, path in modules().items():
        if module.split(".")[1:2] and module.split(".")[1] in FLOWER_FREE:
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                offenders += [f"{module}: {n}" for n in names if n.split(".")[0] == "flwr"]
    assert not offenders, offenders


def test_the_checker_sees_a_planted_cycle_and_an_upward_import() -> None:
    """The oracle itself: a cycle and an upward edge written here are caught."""
    a, b, c = "fedsynth.a", "fedsynth.b", "fedsynth.c"
    edges = {a: {b}, b: {c}, c: {a}}
    assert find_cycle(edges) == [a, b, c, a]
    assert find_cycle({a: {b}, b: set()}) is None
    assert layer("fedsynth.data.cache") < layer("fedsynth.cli.common")
