"""The package's layering: no module imports, however indirectly, a module that imports it, and none imports
from a row above its own in docs/design.md's table of layers.

Imports inside functions count too: a cycle hidden in a function-local import is still a lower layer
reaching up, and it still breaks when the two modules are loaded in the other order.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import aftpipe


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module → the package's modules it imports anywhere in its file (top level, functions, TYPE_CHECKING)."""
    root = package_dir.parent
    modules = {}
    for path in package_dir.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def owner(name: str) -> str | None:
        """The module `name` is, or is inside (`pkg.mod.func` → `pkg.mod`)."""
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" for a in node.names]  # a submodule, or a name in `base`
            else:
                continue
            graph[module] |= {t for t in map(owner, targets) if t is not None and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in import order, the first repeated at the end), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        return list(reversed(e.args[1]))
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph(Path(aftpipe.__file__).parent))
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_the_walker_finds_a_cycle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from toy.sub.low import f\n")
    (pkg / "high.py").write_text("from .sub import low\n")
    (pkg / "sub" / "low.py").write_text("def f():\n    from ..high import g  # reaches up\n")
    (pkg / "apart.py").write_text("import toy.high\n")
    graph = import_graph(pkg)
    assert graph["toy.high"] == {"toy.sub.low"} and graph["toy.sub.low"] == {"toy.high"}
    assert graph["toy.sub"] == {"toy.sub.low"} and graph["toy.apart"] == {"toy.high"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"toy.high", "toy.sub.low"}

    (pkg / "sub" / "low.py").write_text("def f():\n    import math\n")
    assert find_cycle(import_graph(pkg)) is None


# docs/design.md §1b, top to bottom: a module imports only from its own row or the rows below it. `pkg.*` is
# every module inside `pkg` that no entry names itself.
LAYERS = [
    ["aftpipe.cli", "aftpipe.__main__"],
    ["aftpipe.api", "aftpipe"],
    ["aftpipe.sweep", "aftpipe.pipeline", "aftpipe.distillation"],
    ["aftpipe.recipes", "aftpipe.extraction", "aftpipe.training", "aftpipe.probe", "aftpipe.teacher",
     "aftpipe.evaluation", "aftpipe.predict", "aftpipe.export", "aftpipe.components"],
    ["aftpipe.sources", "aftpipe.sources.run_source"],
    ["aftpipe.model", "aftpipe.rundir", "aftpipe.report", "aftpipe.heads", "aftpipe.provenance", "aftpipe.tracking"],
    ["aftpipe.data.*", "aftpipe.data", "aftpipe.students.*", "aftpipe.students", "aftpipe.methods.*",
     "aftpipe.methods", "aftpipe.sources.*", "aftpipe.features"],
    ["aftpipe.store.*", "aftpipe.store", "aftpipe.distributed", "aftpipe.cpu_kernels"],
    ["aftpipe.config", "aftpipe.registry", "aftpipe.errors", "aftpipe.fileio", "aftpipe.progress", "aftpipe.metrics",
     "aftpipe.store.location"],
]


def layer_of(module: str) -> int | None:
    """The row of `module`: the row of its own entry, else of the nearest `pkg.*` above it."""
    for i, row in enumerate(LAYERS):
        if module in row:
            return i
    parent = module
    while "." in parent:
        parent = parent.rpartition(".")[0]
        for i, row in enumerate(LAYERS):
            if f"{parent}.*" in row:
                return i
    return None


def test_every_module_has_a_layer_and_no_import_goes_up():
    graph = import_graph(Path(aftpipe.__file__).parent)
    assert [m for m in graph if layer_of(m) is None] == [], "place the new module in LAYERS and docs/design.md §1b"
    upward = sorted(f"{m} → {t}" for m, targets in graph.items() for t in targets if layer_of(t) < layer_of(m))
    assert upward == []


def test_layer_of_reads_rows_and_wildcards():
    assert layer_of("aftpipe.cli") == 0 and layer_of("aftpipe.store.location") == len(LAYERS) - 1
    assert layer_of("aftpipe.sources.run_source") == 4 and layer_of("aftpipe.sources.hf") == 6
    assert layer_of("aftpipe.store.zarr_store") == 7 and layer_of("aftpipe.nowhere") is None
