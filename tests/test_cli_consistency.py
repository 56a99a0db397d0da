"""The command line says the same things the same way (issue 21, items 16 and 20): every
command that takes ``--library`` answers a misspelt name with "did you mean", a missing
version with the library's own versions; ``delete`` and ``export`` take the library as NAME
or ``--library``; ``generate-pairs -a`` is a choice; ``libraries`` fits the terminal; the
top-level help groups the commands; ``runs`` shows each run's accuracy. In process, with
the fake encoder."""

from __future__ import annotations

import json
import re

import click
import pytest

from tests.helpers.cli import invoke
from tests.helpers.fakes import install_fake, planted_png
from tests.helpers.planted import CONCEPTS, LIBRARY, write_dataset
from whyclip.ui.cli.main import COMMANDS, cli

LIB = "planted"


@pytest.fixture(autouse=True)
def fake(monkeypatch):
    return install_fake(monkeypatch, CONCEPTS)


@pytest.fixture
def home(tmp_path):
    """A store with two versions of ``planted`` and one evaluation run of its newest."""
    h = tmp_path / "home"
    lib = tmp_path / "planted.json"
    lib.write_text(json.dumps(LIBRARY))
    for _ in range(2):
        assert invoke("ingest", lib, "-l", LIB, "-t", "bare", home=h).returncode == 0
    done = invoke("eval", write_dataset(tmp_path / "data"), "-l", LIB, "--name", "first", home=h)
    assert done.returncode == 0, done.stderr
    return h


def one_error_line(done) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    return line


def library_commands() -> set[str]:
    """Every command with a ``--library`` option (the group is lazy: each module loads here)."""
    found = set()
    for name in COMMANDS:
        command = cli.get_command(click.Context(cli), name)
        if any("--library" in p.opts for p in command.params if isinstance(p, click.Option)):
            found.add(name)
    return found


def test_every_command_that_takes_a_library_says_did_you_mean(home, tmp_path):
    image = tmp_path / "frog.png"
    image.write_bytes(planted_png(["frog", "green"]))
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps({"pairs": []}))
    rest = {  # what else each command needs, so that the library name is what fails
        "audit": [],
        "calibrate": [],
        "delete": ["--yes"],
        "eval": [tmp_path / "data"],
        "explain": [image],
        "export": ["--out", tmp_path / "out.csv"],
        "generate-pairs": ["--out", tmp_path / "p.json"],
        "ingest-pairs": [pairs],
        "pairs": [],
        "runs": [],
        "ui": ["--port", "1"],
        "whatif": ["--drop", "banana:yellow peel"],
    }
    # ingest names the library it makes: any new name is right there
    assert library_commands() - {"ingest"} == set(rest)
    for command, args in rest.items():
        line = one_error_line(invoke(command, *args, "--library", "plantd", home=home))
        doing = " to delete" if command == "delete" else ""
        assert line == f"Error: no library 'plantd'{doing}; did you mean 'planted'?", command


def test_a_missing_version_names_the_librarys_versions(home, tmp_path):
    expected = "Error: no library 'planted' version 7; its versions are 1, 2"
    for args in (
        ["export", LIB, "--version", "7", "--out", tmp_path / "x.csv"],
        ["explain", tmp_path / "data" / "banana" / "b1.png", "-l", LIB, "--version", "7"],
        ["eval", tmp_path / "data", "-l", LIB, "--version", "7"],
        ["pairs", "-l", LIB, "--version", "7"],
    ):
        assert one_error_line(invoke(*args, home=home)) == expected, args[0]
    deleting = invoke("delete", LIB, "--version", "7", "--yes", home=home)
    assert one_error_line(deleting) == "Error: no library 'planted' version 7 to delete; its versions are 1, 2"


@pytest.mark.parametrize("command", ["export", "delete"])
def test_export_and_delete_take_the_library_as_name_or_option(home, tmp_path, command):
    def args(*where):
        tail = ["--out", tmp_path / f"{len(where)}.csv"] if command == "export" else ["--version", "1", "--yes"]
        return [command, *where, *tail]

    both = one_error_line(invoke(*args("planted", "--library", "other"), home=home))
    assert both == "Error: two libraries given, NAME 'planted' and --library 'other': give one (see " + (
        f"'whyclip {command} --help')"
    )
    neither = one_error_line(invoke(*args(), home=home))
    assert neither.startswith("Error: which library? give --library NAME (or NAME): the store holds 'planted'")
    assert invoke(*args("planted", "-l", "planted"), home=home).returncode == 0  # the same name twice is one
    if command == "export":
        done = invoke(*args("--library", LIB), home=home)
        assert done.returncode == 0, done.stderr
        written = (tmp_path / "2.csv").read_text()
        assert written == (tmp_path / "3.csv").read_text()  # NAME and --library write the same file
        assert all(d in written for ds in LIBRARY.values() for d in ds)
    else:
        done = invoke(command, "--library", LIB, "--version", "2", "--yes", "--with-runs", home=home)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("deleted library planted v2:")
        gone = invoke("libraries", "--json", home=home)
        assert json.loads(gone.stdout) == []


def test_generate_pairs_aggregate_is_a_choice(home, tmp_path):
    done = invoke("generate-pairs", "-l", LIB, "-a", "meen", "--out", tmp_path / "p.json", home=home)
    line = one_error_line(done)
    assert done.returncode == 2
    assert line.startswith("Error: Invalid value for '--aggregate' / '-a': 'meen' is not one of 'mean', 'centroid'")
    assert "'baseline', 'fudd'" in line
    assert not (tmp_path / "p.json").exists()


LONG = "a-library-name-long-enough-to-push-the-table-past-sixty-columns"


@pytest.fixture
def two_libraries(home, tmp_path):
    lib = tmp_path / "long.json"
    lib.write_text(json.dumps(LIBRARY))
    assert invoke("ingest", lib, "-l", LONG, home=home).returncode == 0
    return home


def test_libraries_fits_the_terminal_and_wide_shows_everything(two_libraries, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    lines = invoke("libraries", home=two_libraries).stdout.splitlines()
    assert max(map(len, lines)) <= 60
    assert lines[0].split() == ["library", "version", "classes", "descriptors", "encoder", "created"]
    # the other columns take 7 + 7 + 11 + 7 ("fake:v1") + 10 and 5 gaps of 2: 52, so the name gets 8
    assert [line.split()[:4] for line in lines[1:]] == [[LONG[:5] + "...", "1", "4", "12"], [LIB, "2", "4", "12"]]

    monkeypatch.setenv("COLUMNS", "300")
    roomy = invoke("libraries", home=two_libraries).stdout.splitlines()
    assert [line.split()[0] for line in roomy[1:]] == [LONG, LIB]  # nothing cut where there is room
    assert "..." not in "".join(roomy)

    monkeypatch.setenv("COLUMNS", "60")
    wide = invoke("libraries", "--wide", home=two_libraries).stdout.splitlines()
    assert wide[0].split()[:3] == ["library", "version", "classes"]
    for column in ("pairs", "dim", "template", "index", "recall@10", "recall measured on", "calibrated", "note"):
        assert column in wide[0]
    assert [line.split()[0] for line in wide[1:]] == [LONG, LIB]
    assert max(map(len, wide)) > 60


def test_top_level_help_groups_the_commands_with_whole_summaries(monkeypatch):
    from whyclip.ui.cli.main import SECTIONS

    listed = [name for _, entries in SECTIONS for name, _ in entries]
    assert sorted(listed) == sorted(COMMANDS)  # every command in exactly one section
    monkeypatch.setenv("COLUMNS", "80")
    done = invoke("--help")
    assert done.returncode == 0
    text = done.stdout
    titles = [title for title, _ in SECTIONS]
    assert titles == ["Build a library", "Explain", "Evaluate and audit", "Manage the store", "Serve"]
    where = [text.index(f"\n{title}:\n") for title in titles]
    assert where == sorted(where)
    for k, (title, entries) in enumerate(SECTIONS):
        end = where[k + 1] if k + 1 < len(where) else len(text)
        block = text[where[k] : end]
        for name, summary in entries:
            assert re.search(rf"^  {re.escape(name)} +{re.escape(summary)}$", block, re.M), (title, name)
    assert max(map(len, text.splitlines())) <= 80
    assert "..." not in text.split("\n\nBuild a library:")[1]  # no summary cut


def test_the_cli_page_lists_the_commands_as_the_help_does():
    """docs/cli.md's "Commands by task" table is SECTIONS, row for row."""
    from tests.helpers import ROOT
    from whyclip.ui.cli.main import SECTIONS

    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    rows = [
        (task.strip(), name, summary)
        for task, name, summary in re.findall(r"^\|(.*?)\| `whyclip ([a-z-]+)` \| (.+?) \|$", page, re.M)
    ]
    expected, section = [], ""
    for title, entries in SECTIONS:
        for name, summary in entries:
            expected.append((title if title != section else "", name, summary))
            section = title
    assert rows == expected


@pytest.mark.usefixtures("database")  # the counting is SQL: on SQLite and on PostgreSQL
def test_runs_shows_each_runs_accuracy_as_the_audit_counts_it(home):
    audit = invoke("audit", "-l", LIB, "--format", "json", home=home)
    acc = {a["method"]: a["top1"] for a in json.loads(audit.stdout)["accuracy"]}
    listed = invoke("runs", home=home).stdout.splitlines()
    head, row = (re.split(r"\s{2,}", line) for line in listed)
    cells = dict(zip(head, row, strict=True))
    assert cells["run"] == "first"
    assert cells["top-1"] == f"{acc['mean']:.1%} mean"
    assert cells["vs name"] == f"{100 * (acc['mean'] - acc['baseline']):+.1f} pts"
    (stored,) = json.loads(invoke("runs", "--json", home=home).stdout)
    assert stored["accuracy"] == {
        "aggregate": "mean",
        "top1": acc["mean"],
        "baseline_top1": acc["baseline"],
        "fudd_top1": None,
    }


def test_run_top1_on_the_planted_world(world):
    """The planted world's known figures: 6 of 9 under the mean, all 9 by class name."""
    from whyclip.ingest.datasets import read_dataset
    from whyclip.ingest.services.evaluate import run_eval
    from whyclip.store import list_runs, run_top1

    store, enc, lib, data = world
    run_eval(store, lib, read_dataset(data), enc, name="r1")
    (info,) = list_runs(store.engine, "planted")
    assert run_top1(store.engine, [info]) == {
        info.id: {"aggregate": "mean", "top1": 6 / 9, "baseline_top1": 1.0, "fudd_top1": None}
    }
    assert run_top1(store.engine, []) == {}
