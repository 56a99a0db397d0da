"""What the command line loads before a command runs: `whyclip --help` must stay fast, so
the CLI module pulls in no database, service, model or generation machinery."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # each check is a fresh interpreter

HEAVY = (
    "sqlalchemy",
    "faiss",
    "torch",
    "transformers",
    "sentence_transformers",
    "fastapi",
    "uvicorn",
    "openai",
    "streamlit",
    "alembic",
    "numpy",
    "whyclip.ingest.encoder.testmodel",
    "tqdm",
    "importlib.metadata",
)  # (numpy: 0.1 s of --help; tqdm 15 ms, importlib.metadata 40 ms)


def test_the_cli_module_imports_nothing_heavy():
    code = (
        "import json, sys; import whyclip.ui.cli.main; "
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_pure_scoring_loads_numpy_alone():
    code = (
        "import json, sys; import whyclip.store.method; "
        "print(json.dumps(sorted(m for m in ('sqlalchemy', 'faiss', 'torch') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_import_whyclip_loads_nothing_heavy():
    """``import whyclip`` (the Python API) names everything and loads it on first use."""
    code = (
        f"import json, sys; import whyclip; names = sorted(whyclip.__all__); "
        f"print(json.dumps([names, [m for m in {list(HEAVY)!r} if m in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names, loaded = json.loads(out.stdout)
    assert {"open", "Workspace", "Explanation", "ExplainOptions", "WhyclipError"} <= set(names)
    assert loaded == []
