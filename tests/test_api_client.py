"""``whyclip explain --server URL`` prints what the local command prints, text and JSON,
bad images included; a refused request is one line and exit 1."""

from __future__ import annotations

from contextlib import nullcontext

import httpx
import pytest
from click.testing import CliRunner

from tests.helpers.service import BANANA, FROG
from whyclip.ui.cli.main import cli

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL


@pytest.fixture
def served(client, monkeypatch):
    """httpx clients made by --server talk to the in-process app."""
    monkeypatch.setattr(httpx, "Client", lambda **kwargs: nullcontext(client))
    return "http://testserver"


def run(args):
    return CliRunner().invoke(cli, args)


@pytest.mark.parametrize(
    "extra", [[], ["--json"], ["--json", "--top", "2", "--aggregate", "centroid", "--compare", "banana", "tree frog"]]
)
def test_server_output_is_the_local_output(served, home, extra):
    (home / "frog.png").write_bytes(FROG)
    (home / "banana.png").write_bytes(BANANA)
    (home / "bad.png").write_bytes(b"not an image")
    good = [str(home / n) for n in ("frog.png", "banana.png")]
    local = run(["explain", *good, "--library", "frogs", *extra])
    remote = run(["explain", *good, "--library", "frogs", "--server", served, *extra])
    assert local.exit_code == remote.exit_code == 0
    assert remote.stdout == local.stdout
    assert "frog.png" in local.stdout
    # an unreadable image is reported and skipped, as the local command's help says
    mixed = run(["explain", good[0], str(home / "bad.png"), good[1], "--library", "frogs", "--server", served, *extra])
    assert mixed.exit_code == 1
    assert mixed.stdout == local.stdout
    lines = mixed.stderr.strip().splitlines()
    bad = "bad.png: not an image (no format Pillow reads): use a JPEG, PNG or WebP file"
    assert [line for line in lines if line.endswith(bad)] == [
        f"Error: {home / 'bad.png'}: not an image (no format Pillow reads): use a JPEG, PNG or WebP file"
    ]
    # beside it, at most the one note the local command gives too (why name vs description is missing)
    assert [line for line in lines if not line.endswith(bad)] == [
        line for line in local.stderr.strip().splitlines() if "name vs description" in line
    ]


def test_server_refusal_is_one_line(served, home):
    (home / "frog.png").write_bytes(FROG)
    r = run(["explain", str(home / "frog.png"), "--library", "nope", "--server", served])
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert r.stderr.count("\n") == 1
    assert "refused the request: no library 'nope'" in r.stderr


def test_unreachable_server(home, tmp_path):
    (tmp_path / "f.png").write_bytes(FROG)
    r = run(["explain", str(tmp_path / "f.png"), "--library", "frogs", "--server", "http://127.0.0.1:9"])
    assert r.exit_code == 1
    assert "cannot reach the whyclip service" in r.stderr


def test_server_calibrated_output_is_the_local_output(served, home):
    from tests.helpers.calibration_runs import plant_run
    from whyclip.store import Store

    (home / "frog.png").write_bytes(FROG)
    plant_run(Store.open(home / "home"), library="frogs", n=200, t_true=2.0)
    assert run(["calibrate", "--library", "frogs"]).exit_code == 0
    for extra in ([], ["--json"]):
        local = run(["explain", str(home / "frog.png"), "--library", "frogs", "--calibrated", *extra])
        remote = run(
            ["explain", str(home / "frog.png"), "--library", "frogs", "--calibrated", "--server", served, *extra]
        )
        assert local.exit_code == remote.exit_code == 0, remote.output
        assert remote.stdout == local.stdout
        assert "calibrat" in local.stdout
