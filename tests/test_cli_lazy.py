"""The lazy command group: ``whyclip --help`` lists every command from a table without
loading a command module, and the table cannot drift from the commands themselves."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import click
import pytest

import whyclip.ui.cli
from tests.helpers import ROOT
from tests.helpers.cli import invoke
from whyclip.ui.cli.main import COMMANDS, cli


def load(target: str) -> click.Command:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_table_loads_each_command_under_its_name(name):
    command = load(COMMANDS[name])
    assert command.name == name


def test_every_command_in_the_cli_package_is_in_the_table():
    """A command written in a module of whyclip.ui.cli but left out of the table would never
    be reachable: each one is listed, under its own name."""
    listed = set(COMMANDS.values())
    found = set()
    for info in pkgutil.iter_modules(whyclip.ui.cli.__path__, "whyclip.ui.cli."):
        module = importlib.import_module(info.name)
        for attribute, value in vars(module).items():
            if isinstance(value, click.Command) and value.callback.__module__ == info.name and value is not cli:
                found.add(f"{info.name}:{attribute}")
    assert found == listed


@pytest.mark.slow  # a fresh process
def test_help_loads_no_command_module():
    code = (
        "import json, sys; from whyclip.ui.cli.main import cli\n"
        "try:\n    cli(['--help'], prog_name='whyclip')\nexcept SystemExit:\n    pass\n"
        "loaded = [m for m in sys.modules if m.startswith('whyclip.ui.cli.') and m != 'whyclip.ui.cli.main']\n"
        "print(json.dumps(sorted(loaded)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "explain" in out.stdout
    assert "make-test-model" in out.stdout
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_an_unknown_command_is_one_line():
    out = invoke("explian")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("Error: No such command 'explian'")
