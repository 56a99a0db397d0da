"""The architecture as rules a tool checks: import-linter's contracts in pyproject.toml
(layers ui > ingest > store; the store knows no encoder and no screen; the method and the
analyses touch no database and no index; ingest knows no screen; ui and ingest import the
store's public names only) and no import cycle at all,
imports inside functions included (grimp reads every import statement of a module).

Both tools find packages on disk as they are installed, whyclip/{store,ingest,ui}, while the
repository keeps store/, ingest/ and ui/ at its top: the checks run on a copy laid out as
installed. Each check is also run on a copy with one violation planted, and must fail there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytest.importorskip("importlinter", reason="import-linter is in the test extra: pip install -e '.[test]'")

CYCLES = """
import json, sys
import grimp

graph = grimp.build_graph("whyclip", include_external_packages=False)
edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
index, low, stack, on_stack, cycles = {}, {}, [], set(), []
sys.setrecursionlimit(100000)

def visit(v):  # Tarjan's strongly connected components
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        component = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            component.append(w)
            if w == v:
                break
        if len(component) > 1:
            cycles.append(sorted(component))

for m in sorted(edges):
    if m not in index:
        visit(m)
print(json.dumps({"modules": len(edges), "cycles": cycles}))
"""


def installed_layout(target: Path) -> Path:
    """A copy of the packages as installed: target/whyclip/{__init__.py,store,ingest,ui}."""
    pkg = target / "whyclip"
    pkg.mkdir(parents=True)
    shutil.copy(ROOT / "whyclip" / "__init__.py", pkg / "__init__.py")
    for name in ("store", "ingest", "ui"):
        shutil.copytree(ROOT / name, pkg / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def run_in(layout: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(layout), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(args, cwd=layout, env=env, capture_output=True, text=True, timeout=300)


def lint_imports(layout: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's contracts, run by this interpreter."""
    command = "from importlinter.cli import lint_imports_command; lint_imports_command(prog_name='lint-imports')"
    return run_in(layout, sys.executable, "-c", command, str(ROOT / "pyproject.toml"), "--no-cache")


def cycles(layout: Path) -> dict:
    out = run_in(layout, sys.executable, "-c", CYCLES)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def plant(layout: Path, module: str, line: str) -> None:
    path = layout / "whyclip" / module
    path.write_text(path.read_text() + "\n" + line + "\n")


def test_import_contracts_hold(tmp_path):
    out = lint_imports(installed_layout(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_no_import_cycle_even_inside_functions(tmp_path):
    found = cycles(installed_layout(tmp_path))
    assert found["modules"] > 100  # the whole tree was read, not an empty package
    assert found["cycles"] == []


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("ui/render/audit_report.py", "from whyclip.store.db.runs import list_runs", "public names"),
        ("store/method/aggregates.py", "def _f():\n    import torch", "no encoder and no screen"),
        ("ingest/services/explain.py", "def _f():\n    import streamlit", "ingest knows no screen"),
        ("store/library.py", "def _f():\n    import whyclip.ingest.images", "Layers"),
        ("store/analysis/stats.py", "def _f():\n    from sqlalchemy import select", "are pure"),
    ],
    ids=[
        "ui-imports-store-internals",
        "store-imports-torch",
        "ingest-imports-streamlit",
        "store-imports-ingest",
        "analysis-imports-the-database",
    ],
)
def test_each_contract_fails_on_a_planted_violation(tmp_path, module, line, contract):
    layout = installed_layout(tmp_path)
    plant(layout, module, line)
    out = lint_imports(layout)
    assert out.returncode != 0
    assert "4 kept, 1 broken" in out.stdout, out.stdout
    broken = " ".join(out.stdout.split("Broken contracts")[-1].split())  # names wrap across lines
    assert contract in broken, out.stdout


def test_a_planted_cycle_inside_a_function_is_found(tmp_path):
    layout = installed_layout(tmp_path)
    plant(layout, "store/method/aggregates.py", "def _f():\n    from whyclip.store.library import Library")
    found = cycles(layout)
    assert any({"whyclip.store.method.aggregates", "whyclip.store.library"} <= set(c) for c in found["cycles"])
