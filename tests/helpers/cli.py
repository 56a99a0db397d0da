"""The command line for tests: in process (fast; monkeypatches such as the fake encoder
apply), or in a fresh process where that is what a test proves.

Both give a :class:`subprocess.CompletedProcess`-like answer (``returncode``, ``stdout``,
``stderr``), so a test reads the same either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from tests.helpers import ROOT
from tests.helpers.run_cli import CONCEPTS as FAKE_CONCEPTS

#: a fresh ``whyclip`` process whose models load as the fake encoder (``fake``) or whose
#: lower-precision checks all fail (``fallback``); see :mod:`tests.helpers.run_cli`
FRESH_FAKE = [sys.executable, "-m", "tests.helpers.run_cli", "fake"]
FRESH_FALLBACK = [sys.executable, "-m", "tests.helpers.run_cli", "fallback"]


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def invoke(*args: str | os.PathLike, home: Path | None = None, input: str | None = None) -> Done:
    """``whyclip [--home HOME] ARGS`` in this process (stdout and stderr apart)."""
    from whyclip.ui.cli.main import cli

    argv = (["--home", str(home)] if home is not None else []) + [str(a) for a in args]
    result = CliRunner().invoke(cli, argv, input=input, prog_name="whyclip")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback the real command would print: fail with it
    return Done(result.exit_code, result.stdout, result.stderr)


def fresh(
    cmd: Sequence[str | os.PathLike], *args: str | os.PathLike, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``cmd ARGS`` in a new process, from the repository root (so ``-m tests.helpers.run_cli`` imports)."""
    return subprocess.run(
        [str(c) for c in (*cmd, *args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


def invoke_fake(*args: str | os.PathLike, home: Path | None = None, concepts=FAKE_CONCEPTS) -> Done:
    """:func:`invoke` with every model loading as the fake encoder: in process what
    ``FRESH_FAKE`` does in a new one."""
    from unittest import mock

    from tests.helpers.fakes import FakeEncoder
    from whyclip import ingest

    with mock.patch.object(ingest, "load_encoder", side_effect=lambda *a, **k: FakeEncoder(concepts)):
        return invoke(*args, home=home)
