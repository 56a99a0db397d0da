"""The README stays true: every command documented and with help; the API snippet runs."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from PIL import Image

from tests.helpers import ROOT
from whyclip.ui.cli.main import COMMANDS, cli

README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_and_is_in_the_readme(name):
    command = cli.get_command(None, name)  # the group is lazy: the command's module loads here
    assert (command.help or "").strip(), f"{name} has no help text"
    assert f"whyclip {name}" in README, f"README does not document 'whyclip {name}'"
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    for param in command.params:
        if param.param_type_name == "option":
            assert param.help, f"option {param.name} of {name} has no help"


def test_readme_setup_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in README
    assert "python -m pytest -q" in ci
    assert "pip install torch==2.13.0" in README
    assert "pip install -q torch==2.13.0" in ci


@pytest.mark.slow
def test_readme_python_api_snippet_runs(tiny_model, tmp_path, monkeypatch):
    from whyclip import ingest
    from whyclip.ingest.encoder.clip_encoder import load_encoder

    code = re.search(r"## Python API.*?```python\n(.*?)```", README, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 5
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ingest, "load_encoder", lambda *args, **kwargs: load_encoder(str(tiny_model)))
    (tmp_path / "descriptors.json").write_text(json.dumps({"tree frog": ["protruding eyes"], "cat": ["whiskers"]}))
    Image.new("RGB", (40, 40), "green").save(tmp_path / "frog.jpg")
    exec(compile(code, "README.md", "exec"), {})
