"""``whyclip generate-pairs``: the most confused pairs of a planted run, asked of a real
loopback chat server (tests/chat_server.py), parsed into paired descriptions, cached."""

from __future__ import annotations

import json
import secrets

import numpy as np
from click.testing import CliRunner

from tests.helpers.chat_server import ChatServer
from whyclip.ingest.datasets import read_dataset
from whyclip.ingest.generate.pairs import PairFeature, confused_pairs, parse_pair_answer
from whyclip.ingest.services.evaluate import run_eval
from whyclip.ui.cli.main import cli


def test_confused_pairs_count_both_directions_most_first():
    labels = np.array([0, 0, 1, 2, 2, 3])
    predicted = np.array([1, 0, 0, 3, 3, 3])
    assert confused_pairs(labels, predicted, ["a", "b", "c", "d"], 5) == [("a", "b", 2), ("c", "d", 2)]
    assert confused_pairs(labels, predicted, ["a", "b", "c", "d"], 1) == [("a", "b", 2)]


def test_pair_answers_are_parsed():
    answer = (
        "Sure:\n- bill: a slim bill. | a heavy bill\n* a grey back | a black back\n- no pair here\n1. tail: | a wedge"
    )
    assert parse_pair_answer(answer) == [
        PairFeature("bill", "a slim bill", "a heavy bill"),
        PairFeature("", "a grey back", "a black back"),
    ]


def test_generate_pairs_from_a_planted_run(world, tmp_path, monkeypatch):
    store, enc, lib, data = world
    run_eval(store, lib, read_dataset(data), enc, name="r1")
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv("PAIRS_KEY", key)
    out = tmp_path / "pairs.json"
    args = [
        "--home",
        str(store.home),
        "generate-pairs",
        "--library",
        "planted",
        "--pairs-from-run",
        "r1",
        "--pairs",
        "5",
        "--out",
        str(out),
        "--model",
        "m",
        "--api-key-env",
        "PAIRS_KEY",
    ]
    with ChatServer(key) as server:
        result = CliRunner().invoke(cli, [*args, "--base-url", server.base_url])
        assert result.exit_code == 0, result.stderr
        assert len(server.requests) == 2
        pairs = json.loads(out.read_text())
        assert [(p["a"], p["b"], p["confusions"]) for p in pairs["pairs"]] == [
            ("banana", "sunflower", 2),
            ("tree frog", "banana", 1),
        ]
        assert pairs["pairs"][0]["features"] == [
            {"attribute": "colour", "a": "the colour of a banana", "b": "the colour of a sunflower"},
            {"attribute": "shape", "a": "a banana outline", "b": "a sunflower outline"},
        ]
        assert pairs["run"] == {"library": "planted", "version": 1, "name": "r1", "aggregate": "mean"}
        again = CliRunner().invoke(cli, [*args, "--base-url", server.base_url])
        assert again.exit_code == 0
        assert len(server.requests) == 2
        assert "0 requests sent, 2 from the cache" in again.stderr
    assert key not in out.read_text() + result.stdout + result.stderr

    # FuDD round trip: the pair descriptions name each class's concept, so re-ranking all 4
    # classes fixes the planted confusions (both sunflowers and B3): 6/9 -> 9/9. With the
    # top 3 nothing is fixed: under the mean, the true class of those images ranks 4th.
    from whyclip import ingest

    monkeypatch.setattr(ingest, "load_encoder", lambda *a, **k: enc)
    scored = CliRunner().invoke(cli, ["--home", str(store.home), "eval-pairs", str(out), "--top-k", "4", "--json"])
    assert scored.exit_code == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["accuracy"] == {"mean": 6 / 9, "fudd": 1.0}
    assert (report["fixed"], report["broken"]) == (3, 0)
    assert sorted((c["true"], c["before"], c["after"]) for c in report["changed"]) == [
        ("banana", "tree frog", "banana"),
        ("sunflower", "banana", "sunflower"),
        ("sunflower", "banana", "sunflower"),
    ]
    top3 = CliRunner().invoke(cli, ["--home", str(store.home), "eval-pairs", str(out), "--top-k", "3", "--json"])
    assert json.loads(top3.stdout)["accuracy"]["fudd"] == 6 / 9
    assert json.loads(top3.stdout)["fixed"] == 0
