"""``whyclip generate`` against a real chat-completions server on loopback (tests/chat_server.py):
parsing, cleaning, retries, the answer cache, structured output, provenance, and the key."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers.chat_server import ChatServer
from whyclip.ui.cli.main import cli

KEY_ENV = "WHYCLIP_TEST_LLM_KEY"


@pytest.fixture
def key(monkeypatch) -> str:
    value = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv(KEY_ENV, value)
    return value


def run_generate(server: ChatServer, classes: Path, out: Path, *extra: str):
    args = [
        "generate",
        str(classes),
        "--out",
        str(out),
        "--base-url",
        server.base_url,
        "--model",
        "tiny-llm",
        "--api-key-env",
        KEY_ENV,
        "--timeout",
        "0.5",
        *extra,
    ]
    return CliRunner().invoke(cli, args)


def write_classes(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(names) + "\n")
    return path


def assert_key_nowhere(key: str, tmp_path: Path, *outputs: str) -> None:
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.startswith("whyclip") and p.suffix == ".db" for p in files), (
        "the store's database was not written"
    )
    for p in files:
        assert key.encode() not in p.read_bytes(), f"the key is in {p}"
    for text in outputs:
        assert key not in text


def test_answers_are_parsed_cleaned_cached_and_never_hold_the_key(tmp_path, key):
    classes = write_classes(tmp_path, "zebra", "martini", "lobster", "giraffe", "copycat")
    out = tmp_path / "lib.json"
    with ChatServer(key) as server:
        first = run_generate(server, classes, out)
        assert first.exit_code == 0, first.output + first.stderr
        assert len(server.requests) == 5
        assert all(r["authorization"] == f"Bearer {key}" for r in server.requests)  # the key was used
        library = json.loads(out.read_text())
        assert library == {
            "zebra": ["black and white stripes", "a horse-like body", "a short upright mane"],
            "martini": ["a cone-shaped glass", "a thin stem", "an olive on a pick"],
            "lobster": ["a red shell", "two large claws", "long antennae"],
            "giraffe": ["a very long neck", "a coat of brown patches"],
            "copycat": ["a striped tail"],  # two lines copied from the prompt's examples dropped
        }
        assert server.requests[0]["body"]["messages"] == [
            {"role": "user", "content": server.requests[0]["body"]["messages"][0]["content"]}
        ]
        side = json.loads((tmp_path / "lib.json.provenance.json").read_text())
        assert side["model"] == "tiny-llm"
        assert side["base_url"] == server.base_url
        assert side["prompt"]["name"] == "default"
        assert side["answers"]["giraffe"][0]["answer"].startswith("Sure! Here are")
        assert side["parameters"]["temperature"] == 0.0
        assert side["requests"] == {"sent": 5, "cached": 0}
        counts = side["cleaning"]["counts"]
        assert counts["copied"] == 2
        assert counts["prose"] == 2
        assert counts["duplicate"] == 0
        dropped = {(f["class_name"], f["descriptor"]) for f in side["cleaning"]["findings"] if f["action"] == "dropped"}
        assert ("copycat", "a very small bird") in dropped
        assert (
            "giraffe",
            "These features help you recognise a giraffe.",
        ) in dropped
        assert "dropped (copied): 'copycat': 'a very small bird'" in first.stdout

        out.unlink()
        second = run_generate(server, classes, out)
        assert second.exit_code == 0, second.stderr
        assert len(server.requests) == 5  # the rerun sent nothing
        assert json.loads(out.read_text()) == library
        assert "0 requests sent, 5 answers from the cache" in second.stdout
    assert_key_nowhere(key, tmp_path, first.stdout, first.stderr, second.stdout, second.stderr)


def test_429_500_timeout_and_an_empty_answer_are_retried(tmp_path, key):
    behaviour = {"busy": ["429", "ok"], "flaky": ["500", "ok"], "slow": ["sleep", "ok"], "shy": ["empty", "ok"]}
    classes = write_classes(tmp_path, *behaviour)
    out = tmp_path / "lib.json"
    with ChatServer(key, behaviour) as server:
        result = run_generate(server, classes, out, "--retries", "2")
        assert result.exit_code == 0, result.stderr
        assert dict(server.per_class) == {"busy": 2, "flaky": 2, "slow": 2, "shy": 2}
        assert json.loads(out.read_text()) == {
            name: [f"a {name} shape", f"the colour of a {name}"] for name in behaviour
        }
        shy = json.loads((tmp_path / "lib.json.provenance.json").read_text())["answers"]["shy"]
        assert [(a["attempt"], a["temperature"], a["answer"] == "") for a in shy] == [(0, 0.0, True), (1, 0.4, False)]
        n = len(server.requests)
        assert run_generate(server, classes, out).exit_code == 0
        assert len(server.requests) == n  # the empty answer and its retry both come from the cache
    assert_key_nowhere(key, tmp_path, result.stdout, result.stderr)


def test_requests_in_flight_never_exceed_the_concurrency(tmp_path, key):
    names = [f"class{i}" for i in range(6)]
    with ChatServer(key, {n: ["pause"] for n in names}) as server:
        result = run_generate(
            server, write_classes(tmp_path, *names), tmp_path / "lib.json", "--concurrency", "2", "--timeout", "5"
        )
        assert result.exit_code == 0, result.stderr
        assert len(server.requests) == 6
        assert server.max_in_flight == 2


def test_a_class_that_stays_empty_is_reported_after_the_retries(tmp_path, key):
    out = tmp_path / "lib.json"
    with ChatServer(key, {"mute": ["empty"]}) as server:
        result = run_generate(server, write_classes(tmp_path, "mute", "zebra"), out, "--empty-retries", "2", "--json")
        assert result.exit_code == 0, result.stderr
        assert server.per_class["mute"] == 3
        temperatures = [
            r["body"]["temperature"] for r in server.requests if "a mute in" in r["body"]["messages"][0]["content"]
        ]
        assert temperatures == [0.0, 0.4, 0.8]
    report = json.loads(result.stdout)
    assert report["empty_classes"] == [
        {"class": "mute", "reason": "the model answered nothing (3 tries, temperature up to 0.8)"}
    ]
    assert json.loads(out.read_text())["mute"] == []


def test_a_server_error_is_one_line_with_the_key_masked(tmp_path, key):
    out = tmp_path / "lib.json"
    with ChatServer(key, {"broken": ["500"]}) as server:
        result = run_generate(server, write_classes(tmp_path, "broken"), out, "--retries", "1")
        assert server.per_class["broken"] == 2
    assert result.exit_code == 1
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: class 'broken': the server answered 500"), result.stderr
    assert "Bearer ***" in lines[0]
    assert key not in result.stderr + result.stdout
    assert not out.exists()


def test_structured_answers_and_a_server_that_refuses_response_format(tmp_path, key):
    classes = write_classes(tmp_path, "zebra", "lobster")
    with ChatServer(key) as server:
        ok = run_generate(server, classes, tmp_path / "a.json", "--structured", "--concurrency", "1")
        assert ok.exit_code == 0, ok.stderr
        assert all(r["body"]["response_format"]["type"] == "json_schema" for r in server.requests)
        assert json.loads((tmp_path / "a.json").read_text())["lobster"] == [
            "a red shell",
            "two large claws",
            "long antennae",
        ]
        modes = {
            a["mode"]
            for v in json.loads((tmp_path / "a.json.provenance.json").read_text())["answers"].values()
            for a in v
        }
        assert modes == {"structured"}
    with ChatServer(key, refuse_structured=True) as server:
        refused = run_generate(
            server, classes, tmp_path / "b.json", "--structured", "--concurrency", "1", "--model", "other"
        )
        assert refused.exit_code == 0, refused.stderr
        assert "refused response_format" in refused.stderr
        assert "parsed as lists" in refused.stderr
        with_format = [r for r in server.requests if "response_format" in r["body"]]
        assert len(with_format) == 1
        assert len(server.requests) == 3
        assert json.loads((tmp_path / "b.json").read_text())["zebra"] == [
            "black and white stripes",
            "a horse-like body",
            "a short upright mane",
        ]
        again = run_generate(server, classes, tmp_path / "b.json", "--structured", "--model", "other")
        assert again.exit_code == 0
        assert len(server.requests) == 3


def test_a_library_gets_its_empty_classes_filled_and_more_with_more(tmp_path, key):
    lib = tmp_path / "mine.json"
    lib.write_text(json.dumps({"zebra": ["stripes"], "lobster": []}))
    out = tmp_path / "filled.json"
    with ChatServer(key) as server:
        assert run_generate(server, lib, out).exit_code == 0
        assert [r["body"]["messages"][0]["content"].count("a lobster in a photo?") for r in server.requests] == [1]
        assert json.loads(out.read_text()) == {
            "zebra": ["stripes"],
            "lobster": ["a red shell", "two large claws", "long antennae"],
        }
        more = run_generate(server, out, tmp_path / "more.json", "--more")
        assert more.exit_code == 0, more.stderr
        assert len(server.requests) == 3
        asked = (
            server.requests[1]["body"]["messages"][0]["content"] + server.requests[2]["body"]["messages"][0]["content"]
        )
        assert "Already listed for a zebra, not to be repeated: stripes." in asked
        # lobster's new answer repeats its lines: the duplicates are dropped and reported
        assert json.loads((tmp_path / "more.json").read_text())["lobster"] == [
            "a red shell",
            "two large claws",
            "long antennae",
        ]
        assert "dropped (duplicate): 'lobster': 'a red shell'" in more.stdout
        names = tmp_path / "names.txt"
        names.write_text("zebra\n")
        refused = run_generate(server, names, tmp_path / "x.json", "--more")
        assert refused.exit_code == 1
        assert "--more adds descriptors to a library" in refused.stderr


def test_a_prompt_file_with_its_own_examples(tmp_path, key):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(
        "Q: What are useful features for distinguishing a kiwi in a photo?\n- a very small bird\n- a striped tail\n\n"
        "Q: What are useful features for distinguishing a {class} in a photo?\n-"
    )
    with ChatServer(key) as server:
        result = run_generate(
            server, write_classes(tmp_path, "copycat"), tmp_path / "lib.json", "--prompt", str(prompt)
        )
        assert result.exit_code == 0, result.stderr
        assert server.requests[0]["body"]["messages"][0]["content"].endswith("distinguishing a copycat in a photo?\n-")
    assert json.loads((tmp_path / "lib.json").read_text()) == {"copycat": ["a long, needle-thin bill"]}
    (tmp_path / "bad.txt").write_text("no placeholder here")
    bad = CliRunner().invoke(
        cli,
        [
            "generate",
            str(tmp_path / "classes.txt"),
            "--out",
            str(tmp_path / "x.json"),
            "--prompt",
            str(tmp_path / "bad.txt"),
        ],
    )
    assert bad.exit_code == 1
    assert "has no {class} placeholder" in bad.stderr


def test_no_key_for_a_hosted_server_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = CliRunner().invoke(
        cli,
        [
            "generate",
            str(write_classes(tmp_path, "zebra")),
            "--out",
            str(tmp_path / "x.json"),
            "--base-url",
            "https://llm.example.invalid/v1",
        ],
    )
    assert result.exit_code == 1
    assert "set the environment variable OPENAI_API_KEY" in result.stderr


@pytest.mark.slow
def test_generate_then_ingest_in_fresh_processes(tmp_path, key, tiny_model):
    """The issue's done-when: ``whyclip generate classes.txt --base-url ... --model M --out lib.json
    && whyclip ingest lib.json --library mine``, each in its own process."""
    import os
    import subprocess
    import sys

    whyclip = [sys.executable, "-m", "whyclip.ui.cli.main"]
    env = dict(os.environ)
    classes = write_classes(tmp_path, "zebra", "lobster", "copycat")
    with ChatServer(key) as server:
        gen = subprocess.run(
            [
                *whyclip,
                "generate",
                str(classes),
                "--base-url",
                server.base_url,
                "--model",
                "M",
                "--out",
                str(tmp_path / "lib.json"),
                "--api-key-env",
                KEY_ENV,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert gen.returncode == 0, gen.stderr
        assert len(server.requests) == 3
    ing = subprocess.run(
        [*whyclip, "ingest", str(tmp_path / "lib.json"), "--library", "mine", "--model", str(tiny_model)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert ing.returncode == 0, ing.stderr
    assert "library mine v1: 3 classes, 7 descriptors" in ing.stdout
    assert_key_nowhere(key, tmp_path, gen.stdout, gen.stderr, ing.stdout, ing.stderr)
