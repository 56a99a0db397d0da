"""What-if edits (store/analysis/whatif.py, ``whyclip whatif``) against oracles that share none
of its arithmetic shortcuts:

* the planted world of test_eval.py (fake encoder, bare template), where a known edit flips
  known images; the oracle re-ingests the edited descriptor file as a new library with the
  same encoder and re-runs ``eval`` on the same images, image by image, every aggregate;
* a seeded random world (odd sizes, empty classes, more edited classes than an image keeps
  best classes), where the oracle publishes the edited library by hand and scores every
  class with the store;
* McNemar's p-value against scipy's binomial test; the command line in fresh processes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import binomtest

from tests.helpers import ROOT
from tests.helpers.cli import FRESH_FAKE, fresh, invoke_fake
from tests.helpers.fakes import FakeEncoder, install_fake
from tests.helpers.planted import CONCEPTS, LIBRARY, write_dataset
from whyclip.ingest import ingest_library
from whyclip.ingest.datasets import read_dataset
from whyclip.ingest.services.evaluate import run_eval
from whyclip.ingest.services.whatif import added_vectors, save_edit
from whyclip.store import DraftClass, EncoderInfo, LibraryDraft, Store
from whyclip.store.analysis.run_records import RunData, RunInfo
from whyclip.store.analysis.whatif import KEEP, WhatIf, plan_edit, read_edits, split_pair
from whyclip.store.db.runs import find_run, load_run
from whyclip.store.errors import InputError
from whyclip.store.method import AGGREGATES
from whyclip.ui.cli.main import cli


@pytest.fixture
def world(tmp_path):
    store = Store.open(tmp_path / "home")
    enc = FakeEncoder(CONCEPTS, noise=0.01)
    ingest_library(store, LIBRARY, "planted", enc, template="bare")
    lib = store.load("planted")
    data = write_dataset(tmp_path / "data")
    run_eval(store, lib, read_dataset(data), enc, name="r1")
    return store, enc, lib, data, load_run(store.engine, find_run(store.engine, "planted", "r1"))


def edited_file(drops, adds) -> dict:
    """The edited descriptor file, written from LIBRARY directly (not by plan_edit)."""
    out = {c: [d for d in ds if (c, d) not in drops] for c, ds in LIBRARY.items()}
    for c, t in adds:
        out[c].append(t)
    return out


def oracle(store, enc, data, drops, adds, name) -> RunData:
    """Re-ingest the edited file as a new library and re-run eval on the same images."""
    ingest_library(store, edited_file(drops, adds), name, enc, template="bare")
    run_eval(store, store.load(name), read_dataset(data), enc, name="oracle")
    return load_run(store.engine, find_run(store.engine, name, "oracle"))


def file_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


PLANTED = {  # edit -> (wrong->right, right->wrong) under the mean, known from the world's design
    "yellow moves from banana to sunflower": (
        [("banana", "yellow peel")],
        [("sunflower", "yellow petals")],
        {"u1.png", "u2.png"},
        set(),
    ),
    "stop sign loses what its images show": (
        [("stop sign", "red colour"), ("stop sign", "octagon shape"), ("stop sign", "curved edge")],
        [],
        set(),
        {"s1.png", "s2.png"},
    ),
    "sunflower loses every descriptor": (
        [("sunflower", "dark seeds"), ("sunflower", "round head")],
        [],
        {"u1.png", "u2.png"},
        set(),
    ),
}


@pytest.mark.parametrize("case", list(PLANTED))
def test_planted_edits_flip_exactly_the_planted_predictions_and_match_a_reingest(world, case):
    store, enc, lib, data, run = world
    drops, adds, to_right, to_wrong = PLANTED[case]
    edit = plan_edit(lib, drops, adds)
    vectors, _, _ = added_vectors(store, lib, enc, edit.new_prompts)
    answer = WhatIf(run, lib).answer(edit, vectors)
    assert {file_name(f["path"]) for f in answer["flips"]["wrong_to_right"]} == to_right
    assert {file_name(f["path"]) for f in answer["flips"]["right_to_wrong"]} == to_wrong
    assert answer["accuracy_before"]["accuracy"] == pytest.approx(6 / 9)
    assert answer["accuracy_after"]["accuracy"] == pytest.approx((6 + len(to_right) - len(to_wrong)) / 9)
    assert (answer["notes"] != []) == (case == "sunflower loses every descriptor")
    if answer["notes"]:
        assert "'sunflower' has no descriptor left" in answer["notes"][0]
        assert "a photo of a sunflower." in answer["notes"][0]
    o = oracle(store, enc, data, drops, adds, "oracle")
    at = {p: i for i, p in enumerate(o.paths)}
    order = [at[p] for p in run.paths]
    for agg in AGGREGATES:  # the oracle's run holds every aggregate
        session = WhatIf(run, lib, agg)
        after = session.rescore(edit, vectors)
        truth = o.results[agg]
        assert list(after.predicted) == list(truth.predicted[order]), agg
        np.testing.assert_allclose(after.score, truth.top_scores[order, 0], atol=1e-6)
        np.testing.assert_allclose(after.true_score, truth.true_score[order], atol=1e-6)
        got = session.answer(edit, vectors)
        assert got["accuracy_after"]["accuracy"] == pytest.approx(float(np.mean(truth.true_rank == 1)))
        stored = run.results[agg]  # "before" is the stored run
        assert list(session.before.predicted) == list(stored.predicted)
        np.testing.assert_allclose(session.before.score, stored.top_scores[:, 0], atol=1e-6)
        changed = set(np.flatnonzero(stored.predicted != truth.predicted[order]))
        flipped = {run.paths.index(f["path"]) for k in ("wrong_to_right", "right_to_wrong") for f in got["flips"][k]}
        assert flipped <= changed
        assert len(changed - flipped) == got["changed_between_wrong"]


def test_an_edit_that_changes_nothing_flips_nothing(world):
    store, enc, lib, _data, run = world
    session = WhatIf(run, lib)
    for edit in (
        plan_edit(lib),
        plan_edit(lib, [("tree frog", "big eyes")], [("tree frog", "big eyes")]),
    ):  # nothing; out and back in
        vectors, _, _ = added_vectors(store, lib, enc, edit.new_prompts)
        a = session.answer(edit, vectors)
        assert a["flips"] == {"right_to_wrong": [], "wrong_to_right": []}
        assert a["changed_between_wrong"] == 0
        assert a["p_value"] == 1.0
        assert a["verdict"] == "not significant"
        assert a["difference"] == 0
        assert a["accuracy_before"] == a["accuracy_after"]
        np.testing.assert_allclose(session.rescore(edit, vectors).score, session.before.score, atol=1e-6)
    assert enc.embedded.count("big eyes") == 1  # the re-added prompt came from the cache


def test_bad_edits_are_one_line_with_the_fix(world):
    _store, _enc, lib, _data, run = world
    with pytest.raises(InputError, match=r"no class 'tree frgo' \(did you mean 'tree frog'\?\)"):
        plan_edit(lib, [("tree frgo", "big eyes")])
    with pytest.raises(
        InputError, match=r"class 'tree frog' has no descriptor 'big eye' to drop \(did you mean 'big eyes'"
    ):
        plan_edit(lib, [("Tree_Frog", "big eye")])  # the class matched loosely, the descriptor not
    with pytest.raises(InputError, match=r"class 'banana' already has the descriptor 'yellow peel'"):
        plan_edit(lib, [], [("banana", "yellow peel")])
    with pytest.raises(InputError, match="is empty"):
        plan_edit(lib, [], [("banana", "  ")])
    assert split_pair(lib, "stop sign:red: bright", "--drop") == ("stop sign", "red: bright")
    with pytest.raises(InputError, match="has no colon"):
        split_pair(lib, "banana", "--drop")
    with pytest.raises(InputError, match=r"edits file is a JSON object"):
        read_edits(["banana"])
    assert read_edits({"drop": [["banana", "yellow peel"]], "add": [{"class": "banana", "text": "x"}]}) == (
        [("banana", "yellow peel")],
        [("banana", "x")],
    )
    edit = plan_edit(lib, [], [("banana", "green tip")])
    with pytest.raises(InputError, match="no vector for the added prompt 'green tip'"):
        WhatIf(run, lib).answer(edit, {})


def test_a_run_of_another_version_or_without_vectors_is_refused(world):
    store, enc, lib, _data, run = world
    ingest_library(store, edited_file([("banana", "yellow peel")], []), "planted", enc, template="bare")
    v2 = store.load("planted")
    with pytest.raises(InputError, match=r"run 'r1' was made with library 'planted' v1, not v2"):
        WhatIf(run, v2)
    empty = RunData(run.info, run.paths, run.labels, np.zeros((0, 0), np.float32), run.results)
    with pytest.raises(InputError, match=r"stored no usable image vectors .* re-run 'whyclip eval"):
        WhatIf(empty, lib)
    none = RunData(run.info, [], np.zeros(0, np.int64), np.zeros((0, 0), np.float32), {})
    with pytest.raises(InputError, match="has no images"):
        WhatIf(none, lib)


# -- a random world, against the store scoring a hand-published edited library ------------


def random_world(store, rng, n_classes=17, dim=7, n_images=300):
    sizes = rng.integers(0, 7, n_classes)
    sizes[3] = 0  # an empty class (baseline fallback) from the start
    texts = [[f"d{c}-{j}" for j in range(s)] for c, s in enumerate(sizes)]
    prompts = {t: rng.standard_normal(dim) for ts in texts for t in ts}  # the bare template: a prompt is its text
    prompts.update({f"a photo of a c{c}.": rng.standard_normal(dim) for c in range(n_classes)})
    info = EncoderInfo("rand-7", "rand", dim, 100.0)

    def draft(classes: list[list[str]], extra: dict) -> LibraryDraft:
        table = {**prompts, **extra}
        rows = {p: i for i, p in enumerate(table)}
        raw = np.array(list(table.values()))
        norms = np.linalg.norm(raw, axis=1)
        return LibraryDraft(
            "rand",
            info,
            "{descriptor}",
            "a photo of a {class}.",
            [
                DraftClass(f"c{c}", f"a photo of a c{c}.", ts, list(ts), [False] * len(ts))
                for c, ts in enumerate(classes)
            ],
            rows,
            (raw / norms[:, None]).astype(np.float32),
            norms.astype(np.float32),
        )

    return texts, prompts, draft


@pytest.mark.parametrize("keep", [KEEP, 2])
@pytest.mark.parametrize("agg", AGGREGATES)
def test_a_random_world_matches_the_store_scoring_the_edited_library(tmp_path, monkeypatch, agg, keep):
    from whyclip.store.analysis import whatif

    monkeypatch.setattr(whatif, "KEEP", keep)  # 2: most images need their full row, and some an unedited class
    rng = np.random.default_rng(5)
    store = Store.open(tmp_path / "home")
    texts, prompts, draft = random_world(store, rng)
    assert sorted(prompts)[:1]
    assert all(t in prompts for ts in texts for t in ts)
    base = store.write_library(draft(texts, {}))
    lib = store.load("rand", base.version)
    x = rng.standard_normal((300, 7)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    truth_scores = lib.scores(x, agg) + 0.02 * rng.standard_normal((300, 17))  # labels: mostly the predicted class
    labels = np.argmax(truth_scores, axis=1)
    info = RunInfo(0, "rand-run", "rand", base.version, base.id, base.created_at, "synthetic", "rand-7", 300)
    run = RunData(info, [f"img{i}" for i in range(300)], labels, x, {})
    session = WhatIf(run, lib, agg)
    # edit 15 of 17 classes (more than the KEEP best classes an image keeps): drop about half, add some
    drops, adds, extra, new_texts = [], [], {}, [list(ts) for ts in texts]
    for c in range(15):
        dropped = [t for t in texts[c] if rng.random() < 0.5] or texts[c][:1]
        for t in dropped:
            drops.append((f"c{c}", t))
            new_texts[c].remove(t)
        if rng.random() < 0.6 or not dropped:
            t = f"new{c}"
            adds.append((f"c{c}", t))
            new_texts[c].append(t)
            extra[t] = rng.standard_normal(7)
    edit = plan_edit(lib, drops, adds)
    edited = [e.position for e in edit.classes]
    assert len(edited) > KEEP
    assert np.isin(session.top, edited).all(axis=1).sum() >= 10
    # the added prompts' vectors as the encoder would give them (unit vector, raw norm)
    vectors = {p: ((v / np.linalg.norm(v)).astype(np.float32), float(np.linalg.norm(v))) for p, v in extra.items()}
    after = session.rescore(edit, vectors)
    full = np.isin(session.top, edited).all(axis=1)
    if keep == 2:
        assert np.sum(full & ~np.isin(after.predicted, edited)) >= 1  # the best unedited class found in the full row
    oracle_info = store.write_library(draft(new_texts, extra))
    scores = store.load("rand", oracle_info.version).scores(x, agg).astype(np.float64)
    expected = np.argmax(scores, axis=1)  # ties: the lower class, as eval ranks them
    assert list(after.predicted) == list(expected)
    np.testing.assert_allclose(after.score, scores[np.arange(300), expected], atol=1e-6)
    np.testing.assert_allclose(after.true_score, scores[np.arange(300), labels], atol=1e-6)
    a = session.answer(edit, vectors)
    b, c = len(a["flips"]["right_to_wrong"]), len(a["flips"]["wrong_to_right"])
    assert b + c >= 10  # enough discordant images for the p-value to mean something
    assert a["p_value"] == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)
    assert a["accuracy_after"]["accuracy"] == pytest.approx(float(np.mean(expected == labels)))
    assert (a["verdict"] == "not significant") == (a["p_value"] >= 0.05)
    assert "not significant" in a["statement"] or a["p_value"] < 0.05
    # the classes not edited kept their scores: the best unedited class never changed
    unedited = np.setdiff1d(np.arange(17), [e.position for e in edit.classes])
    same = ~np.isin(after.predicted, [e.position for e in edit.classes])
    assert np.all(np.isin(after.predicted[same], unedited))


# -- saving an edit as a new version ------------------------------------------------------------


def test_saving_an_edit_publishes_a_new_version_and_leaves_the_old_one(world, tmp_path):
    store, enc, lib, data, run = world
    drops, adds = [("banana", "yellow peel")], [("sunflower", "yellow petals")]
    edit = plan_edit(lib, drops, adds)
    vectors, truncated, _ = added_vectors(store, lib, enc, edit.new_prompts)
    before = WhatIf(run, lib).answer(edit, vectors)
    v1_vectors = np.array(lib.vectors).copy()
    saved = save_edit(store, lib, edit, vectors, truncated, note="yellow belongs to sunflowers")
    assert saved.version == 2
    assert saved.note == "yellow belongs to sunflowers"
    assert saved.n_descriptors == lib.info.n_descriptors
    assert "what-if edit of planted v1" in saved.source
    v1 = store.load("planted", 1)
    assert store.library("planted", 1).note == ""
    assert np.array_equal(np.array(v1.vectors), v1_vectors)
    assert WhatIf(load_run(store.engine, find_run(store.engine, "planted", "r1")), v1).answer(edit, vectors) == before
    v2 = store.load("planted", 2)
    got = {v2.class_names[c]: [t for t, _ in v2.class_texts(c)] for c in range(4)}
    assert got == edited_file(drops, adds)
    # the kept descriptors' vectors are v1's, copied; eval on v2 gives what the what-if said
    old = {
        (v1.class_names[c], t): v1.vectors[int(v1.matrices.offsets[c]) + j]
        for c in range(4)
        for j, (t, _) in enumerate(v1.class_texts(c))
    }
    for c in range(4):
        for j, (t, _) in enumerate(v2.class_texts(c)):
            if (v2.class_names[c], t) in old:
                assert np.array_equal(v2.vectors[int(v2.matrices.offsets[c]) + j], old[(v2.class_names[c], t)])
    report = run_eval(store, v2, read_dataset(data), enc, name="after")
    assert float(np.mean(report.data.results["mean"].true_rank == 1)) == pytest.approx(
        before["accuracy_after"]["accuracy"]
    )


# -- the command line -------------------------------------------------------------------------------

CLI_LIBRARY = {
    "frog": ["green skin", "webbed feet"],
    "zebra": ["stripes", "hooves"],
    "bird": ["wings", "a beak"],
    "cat": ["fur", "whiskers"],
}
CLI_IMAGES = {
    "frog": [("f1.png", "green")],
    "zebra": [("z1.png", "stripes")],
    "bird": [("b1.png", "wings"), ("b2.png", "wings|green*2")],
    "cat": [("c1.png", "fur"), ("c2.png", "fur|stripes*2")],
}


def in_fresh_processes(*args, home):
    return fresh(FRESH_FAKE, "--home", home, *args, timeout=120)


def one_line(r, message: str) -> None:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode != 0, r.stderr
    assert r.stdout == "", r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1, r.stderr
    assert message in lines[0], r.stderr


@pytest.mark.parametrize(
    "whyclip",
    [invoke_fake, pytest.param(in_fresh_processes, marks=pytest.mark.slow)],
    ids=["in-process", "fresh-processes"],
)
def test_the_command(tmp_path, whyclip):
    home = tmp_path / "home"
    lib = tmp_path / "animals.json"
    lib.write_text(json.dumps(CLI_LIBRARY), encoding="utf-8")
    assert whyclip("ingest", str(lib), "-l", "animals", "-t", "bare", home=home).returncode == 0
    data = write_dataset(tmp_path / "data", CLI_IMAGES)
    assert whyclip("eval", str(data), "-l", "animals", "--name", "r", home=home).returncode == 0
    # b2 (wings, green*2) is a frog and c2 (fur, stripes*2) a zebra; a green bird and striped cat fix both
    edits = [
        "--drop",
        "frog:green skin",
        "--add",
        "bird:green feathers",
        "--drop",
        "zebra:stripes",
        "--add",
        "cat:tabby stripes",
    ]
    r = whyclip("whatif", "-l", "animals", "--run", "r", *edits, "--json", home=home)
    assert r.returncode == 0, r.stderr
    a = json.loads(r.stdout)
    assert a["accuracy_before"]["accuracy"] == pytest.approx(4 / 6)
    assert len(a["accuracy_before"]["ci95"]) == 2
    assert {file_name(f["path"]) for f in a["flips"]["wrong_to_right"]} == {"b2.png", "c2.png"}
    right_wrong = {file_name(f["path"]) for f in a["flips"]["right_to_wrong"]}
    assert a["accuracy_after"]["accuracy"] == pytest.approx((6 - len(right_wrong)) / 6)
    b, c = len(right_wrong), 2
    assert a["p_value"] == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue)
    assert a["edit"]["drop"] == [
        {"class": "frog", "descriptor": "green skin"},
        {"class": "zebra", "descriptor": "stripes"},
    ]
    assert [d["text"] for d in a["edit"]["add"]] == ["green feathers", "tabby stripes"]
    edits_file = tmp_path / "edits.json"
    edits_file.write_text(json.dumps(a["edit"]), encoding="utf-8")  # --json's echo is an edits file
    again = json.loads(whyclip("whatif", "-l", "animals", "--edits", str(edits_file), "--json", home=home).stdout)
    assert again["flips"] == a["flips"]
    assert again["p_value"] == a["p_value"]
    text = whyclip("whatif", "-l", "animals", *edits, home=home)
    assert text.returncode == 0
    assert "wrong -> right (2)" in text.stdout
    scale = a["library"]["logit_scale"]  # the text shows S (score x the logit scale), the JSON raw scores
    import whyclip as whyclip_api

    assert scale == pytest.approx(whyclip_api.open(home=home).library("animals").logit_scale)
    for f in a["flips"]["wrong_to_right"]:
        assert (
            f"true {f['true']}: {f['before']} S {f['before_score'] * scale:.2f} -> {f['after']} "
            f"S {f['after_score'] * scale:.2f}"
        ) in text.stdout
    assert "not significant" in text.stdout
    assert "top-1 before 66.7% [" in text.stdout
    one_line(
        whyclip("whatif", "-l", "animals", "--drop", "frgo:green skin", home=home),
        "no class 'frgo' (did you mean 'frog'?)",
    )
    one_line(whyclip("whatif", "-l", "animals", "--drop", "frog:green", home=home), "has no descriptor 'green' to drop")
    one_line(whyclip("whatif", "-l", "animals", "--drop", "frog", home=home), "has no colon")
    one_line(whyclip("whatif", "-l", "animals", home=home), "nothing to edit")
    one_line(
        whyclip("whatif", "-l", "animals", "--drop", "frog:fur", "--note", "x", home=home),
        "--note goes with --save-as-version",
    )
    one_line(
        whyclip("whatif", "-l", "animals", "--run", "nope", "--drop", "frog:green skin", home=home), "has no run 'nope'"
    )
    one_line(
        whyclip("whatif", "-l", "animals", "--edits", str(tmp_path / "none.json"), home=home), "no such edits file"
    )
    (tmp_path / "bad.json").write_text("[1]", encoding="utf-8")
    one_line(
        whyclip("whatif", "-l", "animals", "--edits", str(tmp_path / "bad.json"), home=home),
        "edits file is a JSON object",
    )
    saved = whyclip(
        "whatif", "-l", "animals", *edits, "--save-as-version", "--note", "colours where they belong", home=home
    )
    assert saved.returncode == 0
    assert "saved as library animals v2" in saved.stdout
    assert "v1 is unchanged" in saved.stdout
    listed = json.loads(whyclip("libraries", "--all", "--json", home=home).stdout)
    assert [(i["version"], i["note"]) for i in listed] == [(1, ""), (2, "colours where they belong")]
    assert "colours where they belong" in whyclip("libraries", "--wide", home=home).stdout
    assert (
        json.loads(whyclip("whatif", "-l", "animals", "--run", "r", *edits, "--json", home=home).stdout) == a
    )  # v1 as it was


def test_add_embeds_only_the_new_prompts(tmp_path, monkeypatch):
    enc = install_fake(monkeypatch, CONCEPTS)
    lib = tmp_path / "planted.json"
    lib.write_text(json.dumps(LIBRARY), encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(cli, ["ingest", str(lib), "-l", "planted", "-t", "bare"]).exit_code == 0
    assert runner.invoke(cli, ["eval", str(write_dataset(tmp_path / "data")), "-l", "planted"]).exit_code == 0
    enc.embedded.clear()
    args = [
        "whatif",
        "-l",
        "planted",
        "--add",
        "sunflower:yellow petals",
        "--add",
        "banana:big eyes",
        "--drop",
        "banana:yellow peel",
    ]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert enc.embedded == ["yellow petals"]  # "big eyes" is a tree frog prompt already: cached
    assert runner.invoke(cli, args).exit_code == 0
    assert enc.embedded == ["yellow petals"]
    assert runner.invoke(cli, ["whatif", "-l", "planted", "--drop", "banana:yellow peel"]).exit_code == 0
    assert enc.embedded == ["yellow petals"]
    assert enc.image_batches == [9]


def test_whatif_is_documented():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    text = "\n".join(page.read_text(encoding="utf-8") for page in pages if page.is_file())
    assert "whyclip whatif --library" in text
    assert "--save-as-version" in text
