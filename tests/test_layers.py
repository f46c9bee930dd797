"""The package's layers point down only (ARCHITECTURE.md): no import cycle; the core imports no UI,
no figures and none of the toy's training or evaluation; views live in sdexplain.widgets only.

Read from the source (every import, also those inside functions), so a lazy import that would make a
cycle or reach up a layer is caught too; one subprocess then checks what importing the core loads.
"""

import ast
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sdexplain"

# The core: load a pipeline, run and trace it, the maths and the picture conversions.
CORE = ["sdexplain.loading", "sdexplain.generate", "sdexplain.trace", "sdexplain.attention", "sdexplain.diffusion", "sdexplain.images"]
# What the core must never reach, directly or through another module.
ABOVE_THE_CORE = ("sdexplain.widgets", "sdexplain.plots", "sdexplain.toy.train", "sdexplain.toy.evaluate", "sdexplain.toy.extras")
UI_AND_FIGURES = ("ipywidgets", "matplotlib", "IPython")
# images reads matplotlib's colour tables (numbers, no figure) inside `_lut`, when a colour map is first used.
ALLOWED = {("sdexplain.images", "matplotlib")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module `path` imports, anywhere in the file: sdexplain modules by full name, others by top name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from sdexplain import images` imports the submodule sdexplain.images
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names]
        else:
            continue
        for name in names:
            found.add(name if name.startswith("sdexplain") else name.split(".")[0])
    return found


@lru_cache(maxsize=1)
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [n for n in graph.get(name, ()) if n.startswith("sdexplain") and n != "sdexplain"]
    return seen


def test_no_import_cycle():
    graph = _graph()
    cycles = []
    for name in graph:
        for other in graph[name]:
            if other != "sdexplain" and other != name and name in _reachable(graph, other):
                cycles.append(f"{name} -> {other} -> ... -> {name}")
    assert not cycles, "\n".join(cycles)


def test_the_core_reaches_no_ui_figures_or_toy_training():
    graph = _graph()
    problems = []
    for core in CORE:
        for name in _reachable(graph, core):
            if name.startswith(ABOVE_THE_CORE):
                problems.append(f"{core} reaches {name}")
            for other in graph[name] & set(UI_AND_FIGURES):
                if (name, other) not in ALLOWED:
                    problems.append(f"{core} reaches {name}, which imports {other}")
    assert not problems, "\n".join(sorted(set(problems)))


def test_views_live_only_in_the_widgets_package():
    graph = _graph()
    outside = [name for name, imported in graph.items() if not name.startswith("sdexplain.widgets") and ("ipywidgets" in imported or any(n.startswith("sdexplain.widgets") for n in imported))]
    assert not outside, f"these import ipywidgets or sdexplain.widgets: {outside}"


@pytest.mark.slow
def test_importing_the_core_loads_no_ui_figures_or_toy_training():
    code = f"import sys; import {', '.join(CORE)}; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent).stdout.split()
    assert not [m for m in loaded if m.startswith(ABOVE_THE_CORE) or m.split(".")[0] in UI_AND_FIGURES]
