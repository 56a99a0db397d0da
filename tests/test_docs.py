"""The documentation stays true to the code: every command has help and its entry in the
rendered command-line reference, the site's navigation and its files match, every key of an
explanation's JSON and every HTTP path and field is documented, the README stays short and
installs as CI does, the Python API example runs, and the site builds with no warning."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from tests.helpers import ROOT
from whyclip.ui.cli.main import COMMANDS, cli

DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")
README_MAX_LINES = 250
# The set-up commands the README gives; .ci/run runs the same (with -q).
SETUP = ("pip install torch==2.13.0", "pip install -c constraints.txt -e '.[test]'")
TEST_COMMAND = "python -m pytest"


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


class _MkDocsLoader(yaml.SafeLoader):
    """Reads mkdocs.yml with its own tags (``!relative``, ``!ENV``) as empty values: the
    tests need the navigation, not what the tags resolve to."""


_MkDocsLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def nav_pages(entry) -> list[str]:
    """Every page file the navigation names, in order (sections flattened)."""
    if isinstance(entry, str):
        return [entry]
    if isinstance(entry, dict):
        return [p for value in entry.values() for p in nav_pages(value)]
    return [p for item in entry for p in nav_pages(item)]


def python_block(text: str, heading: str | None = None) -> str:
    """The first ```python block of ``text``, after ``heading`` when given."""
    start = text.index(heading) if heading else 0
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


# -- the command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_reference() -> str:
    """docs/cli.md rendered as the site renders it: mkdocs-click walks the lazy group, so
    every command's module loads and its help, usage and options are written out."""
    import markdown

    return markdown.Markdown(extensions=["attr_list", "mkdocs-click"]).convert(page("cli.md"))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_and_is_in_the_cli_reference(name, cli_reference):
    command = cli.get_command(None, name)  # the group is lazy: the command's module loads here
    assert (command.help or "").strip(), f"{name} has no help text"
    for param in command.params:
        if param.param_type_name == "option":
            assert param.help, f"option {param.name} of {name} has no help"
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    assert f'id="whyclip-{name}"' in cli_reference, f"docs/cli.md renders no entry for 'whyclip {name}'"
    assert f"whyclip {name} [OPTIONS]" in cli_reference, f"the reference lacks the usage of 'whyclip {name}'"


# -- the site's pages ------------------------------------------------------------------------


def test_every_page_in_the_nav_exists_and_every_page_is_in_the_nav():
    nav = nav_pages(yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_MkDocsLoader)["nav"])
    assert len(nav) == len(set(nav)), "a page is in the navigation twice"
    missing = [p for p in nav if not (DOCS / p).is_file()]
    assert not missing, f"the navigation names pages that do not exist: {missing}"
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert not on_disk - set(nav), f"pages missing from the navigation: {sorted(on_disk - set(nav))}"


def test_included_files_exist():
    """Pages that include a file from outside docs/ (pymdownx.snippets) name one that is there."""
    included = {name: re.findall(r'^--8<-- "([^"]+)"', page(name), re.M) for name in ("benchmarks.md", "changelog.md")}
    assert included == {"benchmarks.md": ["bench/README.md"], "changelog.md": ["CHANGELOG.md"]}
    for files in included.values():
        for file in files:
            assert (ROOT / file).is_file(), file


def test_every_key_of_an_explanation_is_documented():
    """Every key ``whyclip explain --json`` can print is named in docs/explanations.md."""
    from whyclip.store.method.explanation import (
        BaselineScore,
        ClassScore,
        Contrast,
        ContrastRow,
        DescriptorScore,
        Explanation,
        PairDescriptors,
        PairFeatureScore,
        Retrieved,
    )
    from whyclip.store.method.maps import DescriptorMap, ImageMaps
    from whyclip.ui.render.explanation_json import explanation_json

    feature = PairFeatureScore("snout", "narrow", "broad", "p a", "p b", 0.2, 0.1, "a")
    pair = PairDescriptors("a", "b", [feature], 0.2, 0.1, "a")
    descriptor = DescriptorScore("d", "p", 0.3, 30.0, 1.0)
    # descriptors_not_listed appears only where a listing was cut: cut one here
    scored = ClassScore("a", 0.3, 0.6, 1, [descriptor], 0.2, 0.5, descriptors_not_listed=1)
    contrast = Contrast("a", "b", 0.3, 0.2, [ContrastRow("d", 0.3, None, 0.1, "a")], pair)
    exp = Explanation(
        "x.png",
        "lib",
        1,
        "enc",
        "mean",
        100.0,
        2,
        [scored],
        [BaselineScore("a", 0.2, 0.5)],
        contrast,
        [Retrieved("a", "d", "p", 0.3, 1)],
        maps=ImageMaps(
            "decomposition",
            (1, 2),
            4,
            1,
            True,
            [DescriptorMap("a", "d", "p", 30.0, 29.0, [[0.5, 0.5]], [[1.0, 2.0]], [[0.7]], None)],
            None,
            (32, 64),
        ),
    )
    answer = explanation_json(exp, SimpleNamespace(info=SimpleNamespace(id="clip-1"), precision="fp32"))

    def keys(value) -> set[str]:
        if isinstance(value, dict):
            return set(value) | {k for v in value.values() for k in keys(v)}
        if isinstance(value, list):
            return {k for v in value for k in keys(v)}
        return set()

    text = page("explanations.md")
    undocumented = sorted(k for k in keys(answer) if f"`{k}`" not in text and f'"{k}"' not in text)
    assert not undocumented, f"docs/explanations.md does not name these JSON keys: {undocumented}"
    for field in dataclasses.fields(Explanation):  # the optional blocks too, even when None here
        assert f"`{field.name}`" in text, field.name


def test_every_http_path_and_field_is_documented():
    """docs/service.md names every operation of the service's OpenAPI schema, and every
    field of their multipart bodies and query strings."""
    from whyclip.ui.api.app import create_app

    schema = create_app(warm=False).openapi()
    text = page("service.md")
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert f"{method.upper()} {path}" in text, f"{method.upper()} {path} is not in docs/service.md"
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            for content in operation.get("requestBody", {}).get("content", {}).values():
                ref = content["schema"]["$ref"].rsplit("/", 1)[-1]
                names += list(schema["components"]["schemas"][ref]["properties"])
            missing = [n for n in names if f"`{n}`" not in text]
            assert not missing, f"{method.upper()} {path}: docs/service.md does not name {missing}"


# -- the README ------------------------------------------------------------------------------


def test_readme_is_short_and_sets_up_as_ci_does():
    lines = len(README.splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the manual is docs/"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ci_installs = {re.sub(r" -q\b", "", line.strip()) for line in ci.splitlines() if line.strip().startswith("pip ")}
    for command in SETUP:
        assert command in README, f"the README does not give {command!r}"
        assert command in ci_installs, f".ci/run does not run {command!r}"
        assert command in page("development.md"), f"docs/development.md does not give {command!r}"
    assert TEST_COMMAND in README
    assert TEST_COMMAND in ci


def test_readme_links_resolve():
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+:", link)]
    assert local, "the README links no documentation"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    assert "mkdocs serve" in README


# -- running the examples and building the site ----------------------------------------------


def test_python_api_example_runs(tiny_model, tmp_path, monkeypatch):
    """The example of docs/python-api.md, which the README repeats, runs as written."""
    from whyclip import ingest
    from whyclip.ingest.encoder.clip_encoder import load_encoder

    code = python_block(page("python-api.md"))
    assert python_block(README, "## Python API") == code, "the README's Python API example differs from the docs'"
    assert len([line for line in code.splitlines() if line.strip()]) <= 5
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ingest, "load_encoder", lambda *args, **kwargs: load_encoder(str(tiny_model)))
    (tmp_path / "descriptors.json").write_text(json.dumps({"tree frog": ["protruding eyes"], "cat": ["whiskers"]}))
    Image.new("RGB", (40, 40), "green").save(tmp_path / "frog.jpg")
    exec(compile(code, "docs/python-api.md", "exec"), {})


@pytest.mark.slow
def test_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: a broken link or anchor, a page outside the navigation or a
    command the reference cannot render fails it."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    schema = json.loads((site / "openapi.json").read_text(encoding="utf-8"))
    assert "/v1/explain" in schema["paths"]
    assert "Recorded on" in (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    reference = (site / "cli" / "index.html").read_text(encoding="utf-8")
    assert all(f'id="whyclip-{name}"' in reference for name in COMMANDS)
