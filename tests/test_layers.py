"""The layer map of textvae, written down and enforced on every import of the package.

Each layer may import only the layers listed after it (and itself)::

    cli         -> hub, training, evaluation, data, models, foundation
    hub         -> models, foundation
    training    -> evaluation, data, models, foundation
    evaluation  -> data, models, foundation
    data        -> foundation
    models      -> foundation
    foundation  -> foundation   (errors, atomic, estimators, padding, schema, resources: leaf modules)

So nothing imports the CLI; the models know nothing of corpora, training, evaluation or
the Hub; data and models are independent of each other. The package root
(``textvae/__init__.py``, ``__main__.py``) assembles the public API and may import any
layer. Every import statement counts: at module level, inside functions (lazy imports)
and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "textvae"
FOUNDATION = {"errors", "atomic", "estimators", "padding", "schema", "resources"}
ALLOWED = {
    "cli": {"hub", "training", "evaluation", "data", "models", "foundation"},
    "hub": {"models", "foundation"},
    "training": {"evaluation", "data", "models", "foundation"},
    "evaluation": {"data", "models", "foundation"},
    "data": {"foundation"},
    "models": {"foundation"},
    "foundation": {"foundation"},
}


def layer_of(module: str) -> str:
    """``textvae.data.pipeline`` -> ``data``; ``textvae.errors`` -> ``foundation``; ``textvae`` -> ``root``."""
    parts = module.split(".")
    if parts[0] != "textvae":
        raise ValueError(module)
    if len(parts) == 1 or parts[1] in ("__init__", "__main__"):
        return "root"
    if parts[1] in FOUNDATION:
        return "foundation"
    if parts[1] in ALLOWED:
        return parts[1]
    raise AssertionError(f"{module} belongs to no layer: add it to the map in {__file__}")


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, module)`` for every textvae module a source imports, relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + int(is_package)]
                base = ".".join(anchor + ([base] if base else []))
            if base == "textvae":  # `from textvae import plots` imports textvae.plots when it is a module
                found += [(node.lineno, f"textvae.{a.name}" if _is_module(f"textvae.{a.name}") else "textvae")
                          for a in node.names]
            else:
                found.append((node.lineno, base))
    return [(line, name) for line, name in found if name == "textvae" or name.startswith("textvae.")]


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    layer = layer_of(module)
    if layer == "root":
        return []
    return [f"{module}:{line} ({layer}) imports {name} ({layer_of(name)})"
            for line, name in imported_modules(source, module, is_package)
            if layer_of(name) not in ALLOWED[layer] | {layer}]


def test_every_import_in_the_package_follows_the_layer_map():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += violations(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
    assert found == []


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (every import statement, lazy ones too)."""
    graph = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {module: {name for _, name in imported_modules(path.read_text(encoding="utf-8"), module,
                                                          path.name == "__init__.py") if name in graph}
            for module, path in graph.items()}


def circle_through(graph: dict[str, set[str]]) -> list[str] | None:
    """A chain of imports that comes back to where it started, or None (depth-first search)."""
    state: dict[str, str] = {}  # module -> "open" while on the current path, "done" after

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for name in sorted(graph[module]):
            if state.get(name) == "open":
                return [*path[path.index(name):], name] if name in path else [module, name]
            if name not in state and (found := visit(name, [*path, name])):
                return found
        state[module] = "done"
        return None

    return next((found for module in sorted(graph) if module not in state
                 and (found := visit(module, [module]))), None)


def test_no_module_imports_itself_back():
    """Within a layer too: a circle (data.corpora -> synthetic -> reading -> corpora) works only by
    the order modules happen to load in, and hides which module owns what."""
    assert circle_through(import_graph()) is None


def test_importing_the_package_loads_no_layer_above_the_models():
    """``import textvae`` gives the model API; the sharing, training, evaluation and CLI layers load
    only when asked for (the Hub upload is the explicit ``textvae.hub.push.push_model``)."""
    code = "import sys, textvae; print(' '.join(m for m in sys.modules if m.startswith('textvae.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=PACKAGE.parent).stdout.split()
    assert {layer_of(name) for name in loaded} <= {"models", "foundation"}, loaded


def test_the_circle_check_finds_a_circle():
    assert circle_through({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize(("module", "source"), [
    ("textvae.models.generation", "from textvae.data.batching import Collator"),
    ("textvae.models.modeling_textvae", "def push(self):\n    from textvae.hub.push import push_model\n"),
    ("textvae.models.loading", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import textvae.hub\n"),
    ("textvae.data.pipeline", "from textvae.training.recipe import DataConfig"),
    ("textvae.data.pipeline", "from ..models import TextVAEModel"),
    ("textvae.evaluation.corpus", "from textvae import TextVAEModel"),
    ("textvae.hub.push", "from textvae.cli.arguments import device"),
    ("textvae.estimators", "from textvae.models import TextVAEConfig"),
])
def test_the_check_catches_upward_and_sideways_imports(module, source):
    assert len(violations(source, module)) == 1


def test_the_check_allows_downward_imports():
    assert violations("from textvae.estimators import perplexity\nfrom . import encoders", "textvae.models.x") == []
    assert violations("from textvae.evaluation.metrics import LikelihoodTotals", "textvae.training.loop") == []
