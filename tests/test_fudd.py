"""FuDD end to end on the planted world of test_eval (fake encoder, exact numbers): an eval
run, pairs generated from its confusions by a real loopback chat server
(tests/chat_server.py), stored with the library version, then ``eval --method fudd``,
``audit``, ``explain --compare`` (CLI and HTTP) and the stored pairs' isolation from the
classes' own descriptors; pairs chosen from ambiguous images; bad input in fresh processes."""

from __future__ import annotations

import json
import secrets

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import binomtest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.helpers.chat_server import ChatServer
from tests.helpers.cli import invoke_fake
from tests.helpers.fakes import FakeEncoder, planted_png
from tests.helpers.planted import IMAGES, LIBRARY
from whyclip.ingest import ingest_library, read_image
from whyclip.ingest.generate.pairs import ambiguous_pairs
from whyclip.store import Store
from whyclip.store.db.runs import find_run, load_run
from whyclip.store.db.schema import ClassPairRow, PairDescriptorRow
from whyclip.ui.cli.main import cli

NAMES = list(LIBRARY)


def invoke(home, *args):
    result = CliRunner().invoke(cli, ["--home", str(home), *args])
    assert result.exit_code == 0, result.stderr
    return result


@pytest.fixture
def served(world, monkeypatch):
    """The planted world with run r1, the fake encoder behind ``ingest.load_encoder`` and a
    chat server whose key the CLI reads from PAIRS_KEY."""
    from whyclip import ingest

    store, enc, _lib, data = world
    monkeypatch.setattr(ingest, "load_encoder", lambda *a, **k: enc)
    invoke(store.home, "eval", str(data), "--library", "planted", "--name", "r1")
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv("PAIRS_KEY", key)
    with ChatServer(key) as server:
        yield store, enc, data, server


def generate_and_store(store, server, out, *extra):
    return invoke(
        store.home,
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
        "--base-url",
        server.base_url,
        *extra,
    )


def test_fudd_round_trip_fixes_the_planted_confusions(served, tmp_path):
    store, enc, data, server = served
    out = tmp_path / "pairs.json"
    stored = generate_and_store(store, server, out, "--store")
    assert len(server.requests) == 2
    assert "2 added" in stored.stderr
    libs = json.loads(invoke(store.home, "libraries", "--json").stdout)
    assert [(i["name"], i["n_pairs"], i["n_descriptors"]) for i in libs] == [("planted", 2, 12)]

    # stored apart, with provenance linking the LLM's answer in the cache
    with Session(store.engine) as s:
        pairs = s.scalars(select(ClassPairRow).order_by(ClassPairRow.class_a)).all()
        assert [(NAMES[p.class_a], NAMES[p.class_b]) for p in pairs] == [
            ("tree frog", "banana"),
            ("banana", "sunflower"),
        ]
        assert all(p.model == "m" and len(p.request_sha256) == 64 and "tell a" in p.question for p in pairs)
        texts = sorted(s.scalars(select(PairDescriptorRow.prompt)).all())
    assert texts == sorted(
        [
            "the colour of a banana",
            "the colour of a sunflower",
            "a banana outline",
            "a sunflower outline",
            "the colour of a tree frog",
            "the colour of a banana",
            "a tree frog outline",
            "a banana outline",
        ]
    )
    from whyclip.store.db import answer_cache

    assert set(answer_cache.lookup(store.engine, [p.request_sha256 for p in pairs])) == {
        p.request_sha256 for p in pairs
    }

    report = json.loads(
        invoke(
            store.home,
            "eval",
            str(data),
            "--library",
            "planted",
            "--name",
            "r2",
            "--method",
            "fudd",
            "--fudd-top-k",
            "4",
            "--json",
        ).stdout
    )
    acc = {a["method"]: a for a in report["accuracy"]}
    assert acc["mean"]["top1"] == pytest.approx(6 / 9)
    assert acc["fudd"]["top1"] == 1.0
    assert acc["baseline"]["top1"] == 1.0
    assert acc["fudd"]["ci95"] == acc["baseline"]["ci95"]  # the same statistics: 9 of 9, Wilson
    run = load_run(store.engine, find_run(store.engine, "planted", "r2"))
    names = [p.rsplit("/", 1)[-1] for p in run.paths]
    mean, fudd = run.results["mean"].predicted, run.results["fudd"].predicted
    assert {n: NAMES[c] for n, c in zip(names, fudd, strict=True)} == {
        f: folder for folder, files in IMAGES.items() for f, _ in files
    }
    changed = sorted(n for n, a, b in zip(names, mean, fudd, strict=True) if a != b)
    assert changed == ["b3.png", "u1.png", "u2.png"]  # every other prediction is the mean's
    assert np.array_equal(run.results["fudd"].true_rank, np.ones(9))
    assert run.info.details["fudd"]["pairs"] == 2
    assert run.info.details["fudd"]["top_k"] == 4

    # the audit's statistics: McNemar against the descriptors (3 fixed, 0 broken) and the name
    audit = json.loads(invoke(store.home, "audit", "--library", "planted", "--run", "r2", "--format", "json").stdout)
    f = audit["controls"]["fudd"]
    assert (f["fixed"], f["broken"], f["top_k"], f["pairs"]) == (3, 0, 4, 2)
    assert f["p_value"] == pytest.approx(binomtest(0, 3, 0.5).pvalue)
    assert f["vs_baseline"]["p_value"] == 1.0
    assert not f["significant"]
    text = invoke(store.home, "audit", "--library", "planted", "--run", "r2").stdout
    assert "FuDD pair descriptors (top-4 of mean re-ranked)" in text
    assert "FuDD 100.0% vs descriptors (mean) 66.7%" in text

    page = tmp_path / "audit.html"
    invoke(store.home, "audit", "--library", "planted", "--run", "r2", "--format", "html", "--out", str(page))
    html = page.read_text()
    assert 'data-control="fudd"' in html
    assert "FuDD 100.0% vs descriptors (mean) 66.7%" in html
    assert 'data-method="fudd"' in html
    invoke(
        store.home, "audit", "--library", "planted", "--run", "r2", "--format", "csv", "--out", str(tmp_path / "csv")
    )
    assert (
        "\nfudd,FuDD pair descriptors (top-4 of mean re-ranked),9,1.0,"
        in (tmp_path / "csv" / "accuracy.csv").read_text()
    )

    # a control that can fail: under the mean the true class of those images ranks 4th
    top3 = json.loads(
        invoke(
            store.home,
            "eval",
            str(data),
            "--library",
            "planted",
            "--name",
            "r3",
            "--method",
            "fudd",
            "--fudd-top-k",
            "3",
            "--json",
        ).stdout
    )
    assert {a["method"]: a["top1"] for a in top3["accuracy"]}["fudd"] == pytest.approx(6 / 9)
    assert top3["fudd"]["fixed"] == 0
    off = json.loads(
        invoke(
            store.home, "eval", str(data), "--library", "planted", "--name", "r4", "--method", "no-fudd", "--json"
        ).stdout
    )
    assert "fudd" not in {a["method"] for a in off["accuracy"]}
    auto = json.loads(invoke(store.home, "eval", str(data), "--library", "planted", "--name", "r5", "--json").stdout)
    assert "fudd" in {a["method"] for a in auto["accuracy"]}  # the version has pairs: FuDD by default

    listing = invoke(store.home, "pairs", "--library", "planted").stdout.splitlines()
    assert listing[0].startswith("tree frog / banana  (LLM m, generated ")
    assert listing[1:3] == [
        "  colour: the colour of a tree frog | the colour of a banana",
        "  shape: a tree frog outline | a banana outline",
    ]
    listed = json.loads(invoke(store.home, "pairs", "--library", "planted", "--json").stdout)
    assert [(p["a"], p["b"], len(p["features"])) for p in listed["pairs"]] == [
        ("tree frog", "banana", 2),
        ("banana", "sunflower", 2),
    ]
    assert listed["pairs"][1]["features"][0] == {
        "attribute": "colour",
        "a": "the colour of a banana",
        "prompt_a": "the colour of a banana",
        "b": "the colour of a sunflower",
        "prompt_b": "the colour of a sunflower",
    }

    # storing the same file again changes nothing; other descriptions need --replace
    again = invoke(store.home, "ingest-pairs", str(out), "--library", "planted")
    assert "2 already stored as they are" in again.stderr
    edited = json.loads(out.read_text())
    edited["pairs"][0]["features"] = edited["pairs"][0]["features"][:1]
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    refused = CliRunner().invoke(
        cli, ["--home", str(store.home), "ingest-pairs", str(tmp_path / "edited.json"), "--library", "planted"]
    )
    assert refused.exit_code == 1
    assert "pass --replace" in refused.stderr
    with Session(store.engine) as s:
        assert s.scalar(select(func.count()).select_from(PairDescriptorRow)) == 8  # nothing changed
    replaced = invoke(store.home, "ingest-pairs", str(tmp_path / "edited.json"), "--library", "planted", "--replace")
    assert "1 replaced" in replaced.stderr
    assert "1 already stored" in replaced.stderr
    with Session(store.engine) as s:
        assert s.scalar(select(func.count()).select_from(PairDescriptorRow)) == 6

    # gc --cache keeps the cached vectors of stored pair prompts (a re-store embeds nothing)
    from whyclip.store.db import embedding_cache
    from whyclip.store.db.lifecycle import collect_garbage

    pair_prompts = ["the colour of a tree frog", "a banana outline"]
    assert set(embedding_cache.lookup(store.engine, enc.cache_key, pair_prompts)) == set(pair_prompts)
    collect_garbage(store, cache=True, min_age_s=0)
    assert set(embedding_cache.lookup(store.engine, enc.cache_key, pair_prompts)) == set(pair_prompts)

    # deleting the version takes its pairs with it
    invoke(store.home, "delete", "planted", "--version", "1", "--with-runs", "--yes")
    with Session(store.engine) as s:
        assert s.scalar(select(func.count()).select_from(ClassPairRow)) == 0
        assert s.scalar(select(func.count()).select_from(PairDescriptorRow)) == 0


def test_stored_pairs_leave_class_scores_explanations_and_retrieval_alone(served, tmp_path):
    store, enc, data, server = served
    images = [str(data / folder / f) for folder, files in IMAGES.items() for f, _ in files]
    vectors, _ = enc.embed_images([read_image(p) for p in images])
    lib = store.load("planted")
    before = (
        lib.scores(vectors),
        lib.scores(vectors, "max"),
        lib.scores(vectors, "centroid"),
        lib.retrieve(vectors, 20),
    )
    plain = [e.to_dict() for e in lib.explain(vectors, images, top=4)]
    generate_and_store(store, server, tmp_path / "pairs.json", "--store")
    lib = store.load("planted")
    after = (
        lib.scores(vectors),
        lib.scores(vectors, "max"),
        lib.scores(vectors, "centroid"),
        lib.retrieve(vectors, 20),
    )
    for x, y in zip(before[:3], after[:3], strict=True):
        assert np.array_equal(x, y)
    assert before[3] == after[3]
    now = [e.to_dict() for e in lib.explain(vectors, images, top=4)]
    for p, n in zip(plain, now, strict=True):
        assert p["classes"] == n["classes"]
        assert p["retrieved"] == n["retrieved"]
    assert lib.info.n_descriptors == 12
    assert [len(lib.class_texts(c)) for c in range(4)] == [3, 3, 4, 2]
    # the control: the same descriptions mixed into the classes' own lists would move the scores
    mixed = {c: list(d) for c, d in LIBRARY.items()}
    mixed["banana"] += ["the colour of a banana", "a banana outline"]
    mixed["sunflower"] += ["the colour of a sunflower", "a sunflower outline"]
    ingest_library(store, mixed, "mixed", enc, template="bare")
    assert not np.allclose(store.load("mixed").scores(vectors), before[0])


def test_explain_compare_shows_the_pair_descriptors_and_http_answers_the_same(served, tmp_path, monkeypatch):
    store, enc, data, server = served
    generate_and_store(store, server, tmp_path / "pairs.json", "--store")
    image = data / "sunflower" / "u1.png"
    args = ["explain", str(image), "--library", "planted", "--compare", "banana", "sunflower"]
    record = json.loads(invoke(store.home, *args, "--json").stdout)
    pd = record["contrast"]["pair_descriptors"]
    assert (pd["a"], pd["b"], pd["favours"]) == ("banana", "sunflower", "sunflower")
    assert [(f["attribute"], f["a"], f["b"], f["favours"]) for f in pd["features"]] == [
        ("colour", "the colour of a banana", "the colour of a sunflower", "sunflower"),
        ("shape", "a banana outline", "a sunflower outline", "sunflower"),
    ]
    image_vec = enc.embed_images([read_image(image)])[0][0]
    oracle = enc.embed_texts([f["prompt_" + side] for f in pd["features"] for side in "ab"])[0] @ image_vec
    got = [f["similarity_" + side] for f in pd["features"] for side in "ab"]
    assert got == pytest.approx(oracle.tolist(), abs=1e-6)
    assert pd["mean_a"] == pytest.approx(np.mean(got[0::2]), abs=1e-6)
    assert pd["mean_b"] > pd["mean_a"]
    assert pd["provenance"]["model"] == "m"
    assert len(pd["provenance"]["request_sha256"]) == 64
    # the descriptors' own contrast still has only the classes' own descriptors
    own = {t for c in ("banana", "sunflower") for t in LIBRARY[c]}
    assert {r["descriptor"] for r in record["contrast"]["rows"]} == own
    text = invoke(store.home, *args).stdout
    assert "banana vs sunflower, by their pair descriptors (FuDD" in text
    assert "favours sunflower" in text
    # no stored pair for tree frog / stop sign: no block
    other = json.loads(
        invoke(
            store.home, "explain", str(image), "--library", "planted", "--compare", "tree frog", "stop sign", "--json"
        ).stdout
    )
    assert other["contrast"]["pair_descriptors"] is None

    from fastapi.testclient import TestClient

    from whyclip.ui.api import ServiceSettings, create_app

    monkeypatch.setenv("WHYCLIP_HOME", str(store.home))
    with TestClient(create_app(ServiceSettings())) as client:
        r = client.post(
            "/v1/explain",
            files=[("image", (str(image), image.read_bytes(), "image/png"))],
            data={"library": "planted", "compare": ["banana", "sunflower"]},
        )
        assert r.status_code == 200, r.text
        assert r.json()["explanations"] == [record]
        versions = client.get("/v1/libraries/planted").json()["versions"]
        assert [v["n_pairs"] for v in versions] == [2]


def test_ambiguous_pairs_count_close_pairs_within_the_top_k():
    scores = np.array(
        [
            [10.0, 9.5, 1.0, 0.0],  # 0/1 within 1
            [9.0, 9.8, 9.7, 0.0],  # 1/2, 0/1, 0/2 within 1
            [0.0, 0.0, 5.0, 9.0],
        ]
    )  # nothing close
    assert ambiguous_pairs(scores, list("abcd"), 3, 1.0, 5) == [("a", "b", 2), ("a", "c", 1), ("b", "c", 1)]
    assert ambiguous_pairs(scores, list("abcd"), 2, 1.0, 5) == [("a", "b", 1), ("b", "c", 1)]
    assert ambiguous_pairs(scores, list("abcd"), 3, 0.0, 5) == []
    far = np.array([[9.0, 1.0, 1.0, 0.9]])  # b, c, d are close to each other but far below a: no pair
    assert ambiguous_pairs(far, list("abcd"), 4, 1.0, 5) == []


def test_pairs_from_images_picks_the_planted_ambiguous_pair(world, tmp_path, monkeypatch):
    """Five images show a banana and a sunflower at once, one a frog and a stop sign; the
    others one thing. Under the baseline the first five are ambiguous between banana and
    sunflower."""
    from whyclip import ingest

    store, enc, _lib, _data = world
    monkeypatch.setattr(ingest, "load_encoder", lambda *a, **k: enc)
    folder = tmp_path / "unlabelled"
    (folder / "sub").mkdir(parents=True)
    for j in range(5):
        (folder / f"mix{j}.png").write_bytes(
            planted_png(["banana", "sunflower", f"yellow*{1 + j / 10}"], colour=(j, 1, 2))
        )
    (folder / "sub" / "fs.png").write_bytes(planted_png(["frog", "stop"], colour=(9, 9, 9)))
    for j, c in enumerate(["frog", "banana", "stop", "sunflower"]):
        (folder / f"clear{j}.png").write_bytes(planted_png([c], colour=(50, j, 50)))
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv("PAIRS_KEY", key)
    out = tmp_path / "amb.json"
    with ChatServer(key) as server:
        result = invoke(
            store.home,
            "generate-pairs",
            "--library",
            "planted",
            "--pairs-from-images",
            str(folder),
            "--top-k",
            "3",
            "--pairs",
            "1",
            "--out",
            str(out),
            "--model",
            "m",
            "--api-key-env",
            "PAIRS_KEY",
            "--base-url",
            server.base_url,
            "--store",
        )
        asked = [r["body"]["messages"][-1]["content"] for r in server.requests]
    assert len(asked) == 1
    assert "tell a banana apart from a sunflower" in asked[0]
    pairs = json.loads(out.read_text())
    assert [(p["a"], p["b"], p["confusions"]) for p in pairs["pairs"]] == [("banana", "sunflower", 5)]
    assert pairs["images"]["n_images"] == 10
    assert pairs["images"]["top_k"] == 3
    assert "run" not in pairs
    assert "1 added" in result.stderr
    assert store.library("planted").n_pairs == 1
    # with two pairs, the frog / stop sign image gives the second
    with ChatServer(key) as server:
        again = invoke(
            store.home,
            "generate-pairs",
            "--library",
            "planted",
            "--pairs-from-images",
            str(folder),
            "--pairs",
            "2",
            "--out",
            str(tmp_path / "amb2.json"),
            "--model",
            "m",
            "--api-key-env",
            "PAIRS_KEY",
            "--base-url",
            server.base_url,
        )
    assert "tree frog / stop sign (1 ambiguous images)" in again.stdout


# -- bad input, through the command line (the fake encoder) ---------------------------------


def run(home, *args):
    return invoke_fake(*args, home=home)


def one_line_error(done, *needles):
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: "), done.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_pairs_input_is_one_line_and_stores_nothing(tmp_path):
    home = tmp_path / "home"
    lib = tmp_path / "lib.json"
    lib.write_text(json.dumps({"frog": ["green skin"], "owl": ["wings"], "cat": ["fur"]}))
    assert run(home, "ingest", str(lib), "-l", "animals").returncode == 0
    (tmp_path / "d" / "frog").mkdir(parents=True)
    (tmp_path / "d" / "frog" / "f.png").write_bytes(planted_png(["green"]))

    def pairs_file(name, pairs):
        path = tmp_path / name
        path.write_text(json.dumps({"model": "m", "pairs": pairs}))
        return str(path)

    feature = [{"attribute": "skin", "a": "green skin", "b": "feathers"}]
    unknown = pairs_file(
        "unknown.json",
        [{"a": "frog", "b": "owl", "features": feature}, {"a": "frog", "b": "zebra", "features": feature}],
    )
    one_line_error(run(home, "ingest-pairs", unknown, "--library", "animals"), "'zebra'", "library they were made for")
    self_pair = pairs_file("self.json", [{"a": "owl", "b": "owl", "features": feature}])
    one_line_error(run(home, "ingest-pairs", self_pair, "--library", "animals"), "names one class twice")
    (tmp_path / "notpairs.json").write_text(json.dumps({"frog": ["green"]}))
    one_line_error(
        run(home, "ingest-pairs", str(tmp_path / "notpairs.json"), "--library", "animals"),
        "not a pairs file",
        "whyclip generate-pairs",
    )
    one_line_error(
        run(home, "eval", str(tmp_path / "d"), "--library", "animals", "--method", "fudd"),
        "has no pair descriptors",
        "whyclip ingest-pairs",
    )
    listed = json.loads(run(home, "libraries", "--json").stdout)
    assert [i["n_pairs"] for i in listed] == [0]  # nothing half-written
    assert json.loads(run(home, "runs", "--json").stdout) == []
    good = pairs_file("good.json", [{"a": "frog", "b": "owl", "features": feature}])
    done = run(home, "ingest-pairs", good, "--library", "animals")
    assert done.returncode == 0, done.stderr
    assert [i["n_pairs"] for i in json.loads(run(home, "libraries", "--json").stdout)] == [1]


def test_the_pair_tables_arrive_by_migration_and_leave_by_downgrade(tmp_path):
    """A store at the revision before pair descriptors, with a library, gains the two tables
    on a write open (its library intact); downgrading removes them and nothing else."""
    from alembic import command
    from sqlalchemy import inspect, text

    from whyclip.store.db import migrations
    from whyclip.store.db.engine import begin_write, make_engine

    before = migrations._script().get_revision("0007").down_revision  # 0005 now; whatever precedes it after a rechain
    store = Store.open(tmp_path / "home")
    ingest_library(store, {"frog": ["green skin"], "owl": ["wings"]}, "a", FakeEncoder(["green"]))
    url = store.engine.url
    store.engine.dispose()
    engine = make_engine(url.render_as_string(hide_password=False))
    with begin_write(engine) as conn:
        command.downgrade(migrations.alembic_config(conn), before)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        assert not {"class_pairs", "pair_descriptors"} & tables
        assert "libraries" in tables
        assert conn.execute(text("SELECT count(*) FROM descriptors")).scalar() == 2
    engine.dispose()
    reopened = Store.open(tmp_path / "home")  # a write open migrates
    with reopened.engine.connect() as conn:
        assert {"class_pairs", "pair_descriptors"} <= set(inspect(conn).get_table_names())
        assert migrations.current_revision(conn) == migrations.state(conn).head
    info = reopened.library("a")
    assert (info.n_descriptors, info.n_pairs) == (2, 0)


def test_rerank_results_moves_the_chosen_class_to_the_front_as_a_plain_loop_does():
    """Seeded random top lists of odd sizes against a plain loop: the chosen class first,
    the others in order, the true rank its new place (else unchanged)."""
    from whyclip.ingest.services.fudd import rerank_results
    from whyclip.store import PairTexts
    from whyclip.store import rerank_with_pairs as rerank
    from whyclip.store.analysis.run_records import rank_results

    rng = np.random.default_rng(5)
    n, c, d = 17, 7, 9
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    labels = rng.integers(0, c, n)
    base = rank_results(rng.standard_normal((n, c)), labels)
    texts = PairTexts(
        {(a, b): [k] for k, (a, b) in enumerate([(0, 1), (1, 0), (2, 3), (3, 2), (4, 5), (5, 4)])},
        rng.standard_normal((6, d)).astype(np.float32),
    )
    got = rerank_results(base, vectors, labels, texts, 4)
    chosen = rerank(vectors, base.top, texts, 4)
    assert (chosen != base.predicted).any()  # the oracle is not the identity
    for i in range(n):
        row = list(base.top[i])
        want = [int(chosen[i])] + [x for x in row if x != chosen[i]]
        assert list(got.top[i]) == want
        assert list(got.top_scores[i]) == [base.top_scores[i, row.index(x)] for x in want]
        assert got.true_rank[i] == (want.index(labels[i]) + 1 if labels[i] in want else base.true_rank[i])


def test_pairs_are_written_read_and_deleted_on_sqlite_and_postgresql(tmp_path, db_url):
    """The store's side alone, on both databases: a pair's vectors read back exactly, a
    filtered read, the content identity (same pair again: unchanged), deletion with its version."""
    from whyclip.store.db.lifecycle import delete_versions
    from whyclip.store.db.pair_descriptors import PairDescription, PairDraft, load_pairs, write_pairs

    store = Store.open(tmp_path / "home", db_url)
    enc = FakeEncoder(["green"])
    ingest_library(store, {"frog": ["green skin"], "owl": ["wings"], "cat": ["fur"]}, "a", enc)
    lib = store.load("a")
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((4, 32)).astype(np.float32)
    desc = [
        PairDescription(0, 2, "coat", "fur", "cat, which has fur"),
        PairDescription(0, 0, "coat", "skin", "frog, which has skin"),
        PairDescription(1, 2, "", "whiskers", "cat, which has whiskers"),
        PairDescription(1, 0, "", "none", "frog, which has none"),
    ]
    draft = PairDraft(2, 0, ("cat", "frog"), desc, vecs, np.ones(4, np.float32), model="m")
    written = write_pairs(store.engine, lib.info.id, enc.cache_key, [draft])
    assert written.added == [("frog", "cat")]
    assert write_pairs(store.engine, lib.info.id, enc.cache_key, [draft]).unchanged == [("frog", "cat")]
    (got,) = load_pairs(store.engine, lib.info.id, 32, {(0, 2)})
    assert (got.class_a, got.class_b, got.model) == (0, 2, "m")
    assert got.descriptions == desc
    assert np.array_equal(got.vectors, vecs)
    assert got.side(2) == [0, 2]
    assert load_pairs(store.engine, lib.info.id, 32, {(0, 1)}) == []
    assert store.library("a").n_pairs == 1
    delete_versions(store, "a", 1)
    with Session(store.engine) as s:
        assert s.scalar(select(func.count()).select_from(PairDescriptorRow)) == 0
