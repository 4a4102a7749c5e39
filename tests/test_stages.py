"""The stage layer's shape: one module per registered stage, named after it; no import cycle in the
package; a plugin's stage found through the ``recgpt_data.stages`` entry-point group."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from plugin_dist import write_dist_info

from recgpt_data import stage as contract
from recgpt_data import stages

PACKAGE = Path(stages.__file__).parents[1]  # recgpt_data/


def test_every_registered_stage_lives_in_its_own_module() -> None:
    registry = stages.load()
    builtin = {name: d for name, d in registry.items() if d.fn.__module__.startswith("recgpt_data.")}
    files = {p.stem for p in (PACKAGE / "stages").glob("*.py") if p.stem != "__init__"}
    assert set(builtin) == files  # a module per stage, a stage per module
    for name, definition in builtin.items():
        assert definition.fn.__module__ == f"recgpt_data.stages.{name}", name
    assert not (PACKAGE / "stages.py").exists()


def module_name(path: Path) -> str:
    """``recgpt_data/a/b.py`` -> ``recgpt_data.a.b``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it is imported: at module level, in ``try`` and in ``if``
    blocks, but not under ``if TYPE_CHECKING`` nor inside functions and classes."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                pending += node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
    return found


def import_graph() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports when it is imported (a
    submodule's parent packages included, since importing it runs their ``__init__``, except the
    packages the importing module itself lies in, which are being imported already)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in top_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
        edges = set()
        for target in targets:
            parts = target.split(".")
            edges.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
        inside = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}  # running already
        graph[module] = {t for t in edges if t in paths and t != module and t not in inside}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "recgpt_data.stages.dedup" in graph and "recgpt_data.stage" in graph["recgpt_data.stages.dedup"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]


def test_a_plugin_stage_is_found_through_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "recgpt_plugin_demo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "counting.py").write_text(
        "import polars as pl\n"
        "from recgpt_data.stage import Context, Params, StageOutput, StageStats, stage\n\n\n"
        "class CountParams(Params):\n    pass\n\n\n"
        '@stage("t_plugin_count", params=CountParams, reads=("interactions",))\n'
        "def count_stage(tables, params, ctx):\n"
        '    return StageOutput({}, StageStats(rows_in={"interactions": 0}))\n'
    )
    write_dist_info(
        tmp_path, "recgpt-plugin-demo", "0.1", {stages.ENTRY_POINTS: {"counting": "recgpt_plugin_demo.counting"}}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "recgpt_plugin_demo.counting", raising=False)
    assert "t_plugin_count" not in contract.REGISTRY
    try:
        found = stages.get("t_plugin_count")
        assert found.fn.__module__ == "recgpt_plugin_demo.counting"
        assert found.reads == ("interactions",)
    finally:
        contract.REGISTRY.pop("t_plugin_count", None)
