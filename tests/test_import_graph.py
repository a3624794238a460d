"""The module graph of `livestream`, `pipelines` and `trickle`: no cycles, and the test-model
builders (`pipelines.testing`) stay out of the runtime.

Every `import` counts, wherever it is written: at module level, inside a function body or under
`if TYPE_CHECKING:`. A lazy import hides a cycle from the interpreter but not from a reader, and
the next refactor that hoists it turns it into an ImportError.

Edges, as the interpreter would resolve them:
- `import a.b.c` depends on `a.b.c`. A package's `__init__` is a node of its own, named `a.b`,
  and the import also depends on the `__init__`s it runs first: `a` and `a.b`, except those the
  importer sits inside (its own packages are already imported when it runs);
- `from a.b import c` depends on `a.b.c` when that is a module, else on `a.b`;
- relative imports resolve against the importing module's package.
Only modules of the three packages are nodes; third-party imports are ignored.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("livestream", "pipelines", "trickle")
TESTING = "pipelines.testing"
# The only runtime module allowed to import the test-model builders: `livestream models tiny`.
TESTING_IMPORTERS = {"livestream.cli"}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({module_path(self.source)}:{self.line})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(name: str) -> str:
    rel = Path(*name.split("."))
    if (ROOT / rel / "__init__.py").exists():
        return str(rel / "__init__.py")
    return str(rel.with_suffix(".py"))


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def package_of(path: Path, name: str) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def resolve(name: str, modules: set[str]) -> str | None:
    """The module that `import name` runs last: `name` itself, or for an attribute path such as
    `pipelines.registry.BATCH_TASKS`, the longest prefix that is a module."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def with_packages(importer: str, target: str) -> list[str]:
    """`target` and the package `__init__`s that importing it runs, outermost first."""
    parts = target.split(".")
    ancestors = [".".join(parts[:i]) for i in range(1, len(parts))]
    return [p for p in ancestors if not (importer == p or importer.startswith(p + "."))] + [target]


def imports_of(path: Path, name: str, modules: set[str]) -> Iterator[Edge]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = package_of(path, name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = resolve(alias.name, modules)
                if target is not None:
                    yield from (Edge(name, t, node.lineno) for t in with_packages(name, target))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join(base_parts)
                if node.module:
                    base = f"{base}.{node.module}" if base else node.module
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in modules else resolve(base, modules)
                if target is not None:
                    yield from (Edge(name, t, node.lineno) for t in with_packages(name, target))


@functools.cache
def import_graph() -> dict[str, list[Edge]]:
    files = source_files()
    modules = {module_name(p) for p in files}
    graph: dict[str, list[Edge]] = {}
    for path in files:
        name = module_name(path)
        edges = dict.fromkeys(e for e in imports_of(path, name, modules) if e.target != name)
        graph[name] = list(edges)
    return graph


def strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; returns the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[Edge]]] = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for edge in edges:
                nxt = edge.target
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


def shortest_cycle(graph: dict[str, list[Edge]], members: set[str], start: str) -> list[str]:
    """The shortest import chain from `start` back to itself inside one component (BFS)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph[node]:
                if edge.target == start:
                    chain = [node]
                    while chain[-1] != start:
                        chain.append(came_from[chain[-1]])
                    return [start, *reversed(chain[:-1]), start]
                if edge.target in members and edge.target not in came_from:
                    came_from[edge.target] = node
                    following.append(edge.target)
        frontier = following
    return [start]


def describe_cycles(graph: dict[str, list[Edge]], components: list[list[str]]) -> str:
    """Each cyclic component, one shortest cycle in it, and every import inside it: a component
    is gone once enough of those imports are cut that no cycle is left."""
    blocks = []
    for component in components:
        members = set(component)
        inner = [str(e) for m in component for e in graph[m] if e.target in members]
        blocks.append(
            f"cycle among {', '.join(component)}\n"
            f"  e.g. {' -> '.join(shortest_cycle(graph, members, component[0]))}\n"
            "  imports inside it:\n    " + "\n    ".join(inner)
        )
    return f"{len(components)} import cycle(s):\n" + "\n".join(blocks)


def test_graph_covers_the_packages() -> None:
    graph = import_graph()
    assert {"livestream.cli", "pipelines.registry", "trickle"} <= graph.keys()
    # Sanity check of the resolver: cli.py imports the registry somewhere in its body.
    assert any(e.target.startswith("pipelines.") for e in graph["livestream.cli"])


def test_no_import_cycles() -> None:
    graph = import_graph()
    components = strongly_connected(graph)
    assert not components, describe_cycles(graph, components)


def in_testing(name: str) -> bool:
    return name == TESTING or name.startswith(TESTING + ".")


def test_runtime_does_not_import_test_models() -> None:
    graph = import_graph()
    offenders = [
        str(e)
        for name, edges in graph.items()
        if not in_testing(name) and name not in TESTING_IMPORTERS
        for e in edges
        if in_testing(e.target)
    ]
    assert not offenders, "runtime modules import the test-model builders:\n" + "\n".join(offenders)


#: Which top-level packages each may import: `trickle` knows no video, `pipelines` no HTTP engine.
ALLOWED_LAYERS = {"trickle": {"trickle"}, "pipelines": {"pipelines"}, "livestream": {"livestream", "pipelines", "trickle"}}


def test_packages_import_one_way() -> None:
    graph = import_graph()
    offenders = [
        str(e)
        for name, edges in graph.items()
        for e in edges
        if e.target.split(".")[0] not in ALLOWED_LAYERS[name.split(".")[0]]
    ]
    assert not offenders, "imports against the layering (trickle < pipelines < livestream):\n" + "\n".join(offenders)


def test_no_runtime_module_named_tiny() -> None:
    testing_dir = ROOT / Path(*TESTING.split("."))
    named = [
        str(p.relative_to(ROOT))
        for p in source_files()
        if "tiny" in p.name.lower() and testing_dir not in p.parents
    ]
    assert not named, "test-model builders belong in pipelines/testing/: " + ", ".join(named)


def test_cycle_report_on_a_sample() -> None:
    graph = {
        "a": [Edge("a", "b", 1)],
        "b": [Edge("b", "c", 2), Edge("b", "a", 3)],
        "c": [Edge("c", "a", 4)],
        "d": [Edge("d", "a", 5)],
    }
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert shortest_cycle(graph, {"a", "b", "c"}, "a") == ["a", "b", "a"]
    assert shortest_cycle(graph, {"a", "b", "c"}, "c") == ["c", "a", "b", "c"]


def test_resolver_on_a_sample(tmp_path: Path) -> None:
    """`from pkg import name` is the submodule when one exists, else the package itself."""
    modules = {"pkg", "pkg.sub", "pkg.sub.leaf", "pkg.other", "ext", "ext.mod"}
    src = tmp_path / "leaf.py"
    src.write_text(
        "from . import other\n"  # not a submodule of pkg.sub: resolves to pkg.sub itself
        "from .. import other as o2\n"
        "from ..other import thing\n"
        "def f():\n"
        "    import pkg.sub.leaf.attr\n"
        "    from pkg import sub\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import pkg\n"
        "import ext.mod\n"  # runs ext/__init__ first; pkg's own __init__s are already imported
    )
    edges = sorted((e.target, e.line) for e in imports_of(src, "pkg.sub.leaf", modules))
    assert edges == [
        ("ext", 10),
        ("ext.mod", 10),
        ("pkg", 9),
        ("pkg.other", 2),
        ("pkg.other", 3),
        ("pkg.sub", 1),
        ("pkg.sub", 6),
        ("pkg.sub.leaf", 5),
    ]
