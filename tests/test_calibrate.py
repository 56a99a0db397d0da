"""Calibration (``whyclip calibrate``, ``explain --calibrated``): the fits recover planted
temperatures and biases, the figures match plain loops written here, and the command line
fails in one line on bad input.

A planted miscalibrated world: the "true" model's logits are ``z``, labels are sampled
from ``softmax(z)`` with a seeded generator, and the model under test reports ``z x T_true``
(over-confident for ``T_true > 1``); the right temperature is ``T_true``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from tests.helpers.calibration_runs import plant_run, sample_labels
from tests.helpers.cli import FRESH_FAKE, invoke_fake
from tests.helpers.cli import fresh as fresh_process
from tests.helpers.fakes import FakeEncoder, install_fake, planted_png
from whyclip.ingest import ingest_library
from whyclip.store import Store
from whyclip.store.analysis import calibration as cal
from whyclip.store.errors import InputError
from whyclip.store.method import calibrated_softmax
from whyclip.ui.cli.main import cli

CONCEPTS = ["green", "stripes", "wings", "fur"]  # as the CLI helpers' fake encoder (tests.helpers.cli)
LIBRARY = {
    "frog": ["green skin", "big eyes"],
    "zebra": ["black stripes", "hooves"],
    "moth": ["dusty wings", "antennae"],
    "cat": ["soft fur", "whiskers"],
    "rock": ["grey", "hard"],
}


def planted(n: int = 2000, c: int = 12, t_true: float = 3.0, spread: float = 2.0, seed: int = 0, bias=None):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, spread, (n, c))
    y = sample_labels(z + (0 if bias is None else bias), rng)
    return z * t_true, y


# -- the figures against plain loops ---------------------------------------------------------


def ece_loop(probs, labels, bins=15):
    """Guo et al.'s ECE, one image at a time: bins (k/15, (k+1)/15], the first from 0."""
    total = [0] * bins
    conf_sum = [0.0] * bins
    hits = [0] * bins
    for p, y in zip(probs, labels, strict=True):
        top = max(range(len(p)), key=lambda j: p[j])
        conf = p[top]
        b = 0
        while b < bins - 1 and conf > (b + 1) / bins:
            b += 1
        total[b] += 1
        conf_sum[b] += conf
        hits[b] += top == y
    n = len(labels)
    return sum(abs(hits[b] / total[b] - conf_sum[b] / total[b]) * total[b] / n for b in range(bins) if total[b])


def nll_loop(logits, labels, t=1.0, b=None):
    out = 0.0
    for z, y in zip(logits, labels, strict=True):
        u = [z[j] / t + (0 if b is None else b[j]) for j in range(len(z))]
        m = max(u)
        out += -(u[y] - m - math.log(sum(math.exp(v - m) for v in u)))
    return out / len(labels)


def test_ece_and_nll_match_plain_loops():
    z, y = planted(n=300, c=7, t_true=2.0, seed=3)
    for t in (0.5, 1.0, 2.7):
        probs = cal.probabilities(z, t)
        assert cal.ece(probs, y) == pytest.approx(ece_loop(probs, y), abs=1e-12)
        assert cal.nll(z, y, t) == pytest.approx(nll_loop(z, y, t), rel=1e-10)
    b = np.random.default_rng(1).normal(size=7)
    assert cal.nll(z, y, 1.5, b) == pytest.approx(nll_loop(z, y, 1.5, b), rel=1e-10)
    assert np.allclose(cal.probabilities(z, 1.5, b), calibrated_softmax(z / 100, 100, 1.5, b))
    bins = cal.reliability_bins(cal.probabilities(z), y)
    assert len(bins) == 15
    assert sum(x["count"] for x in bins) == 300


def test_a_confidence_on_a_bin_edge_falls_in_the_lower_bin():
    probs = np.array([[0.4, 0.4, 0.2], [0.2, 0.2, 0.6], [1.0, 0.0, 0.0], [0.5, 0.5 - 1e-9, 1e-9]])
    bins = cal.reliability_bins(probs, np.array([2, 2, 0, 0]))
    counts = [b["count"] for b in bins]  # 0.4 = 6/15 in (5/15, 6/15]; 0.6 = 9/15 in (8/15, 9/15]; 0.5 in (7/15, 8/15]
    assert counts[5] == 1
    assert counts[8] == 1
    assert counts[14] == 1
    assert counts[7] == 1
    assert sum(counts) == 4
    assert cal.ece(probs, np.array([2, 2, 0, 0])) == pytest.approx(ece_loop(probs, [2, 2, 0, 0]), abs=1e-15)


def test_the_fit_recovers_an_over_confident_temperature_and_lowers_held_out_ece():
    z, y = planted(t_true=3.0)
    r = cal.calibrate(z, y, 12, seed=0)
    assert r["temperature"] == pytest.approx(3.0, rel=0.1)
    assert r["ece_before"] > 0.1
    assert r["ece_after"] < r["ece_before"] - 0.08
    assert r["ece_after"] < 0.05
    assert r["nll_after"] < r["nll_before"] - 0.2
    assert r["accuracy_after"] == r["accuracy_before"]  # a temperature changes no decision
    assert r["n_fit"] + r["n_held_out"] == 2000
    assert abs(r["n_fit"] - 1000) < 30
    # the held-out figures are those of the stated temperature on the held-out images
    _, held = cal.split(y, 0.5, 0)
    assert r["ece_after"] == pytest.approx(ece_loop(cal.probabilities(z[held], r["temperature"]), y[held]), abs=1e-12)
    assert r["nll_before"] == pytest.approx(nll_loop(z[held], y[held]), rel=1e-10)
    # the optimum: the NLL on the fit part is no lower a little either side
    fit, _ = cal.split(y, 0.5, 0)
    best = cal.nll(z[fit], y[fit], r["temperature"])
    assert best <= min(cal.nll(z[fit], y[fit], r["temperature"] * f) for f in (0.98, 1.02))


def test_an_under_confident_model_is_sharpened():
    z, y = planted(t_true=0.4)
    r = cal.calibrate(z, y, 12)
    assert r["temperature"] == pytest.approx(0.4, rel=0.1)
    assert r["ece_after"] < r["ece_before"]


def test_a_calibrated_model_changes_little():
    z, y = planted(t_true=1.0, seed=5)
    r = cal.calibrate(z, y, 12, seed=2)
    assert r["temperature"] == pytest.approx(1.0, abs=0.1)
    assert abs(r["nll_after"] - r["nll_before"]) < 0.01
    assert abs(r["ece_after"] - r["ece_before"]) < 0.02


def test_per_class_biases_recover_planted_biases():
    bias = np.linspace(-1.5, 1.5, 12)
    z, y = planted(n=4000, t_true=2.0, bias=bias, seed=7)
    r = cal.calibrate(z, y, 12, per_class_bias=True)
    got = np.array(r["biases"])
    assert np.corrcoef(got, bias)[0, 1] > 0.95
    assert np.abs((got - got.mean()) - (bias - bias.mean())).max() < 0.35
    assert r["temperature"] == pytest.approx(2.0, rel=0.1)
    plain = cal.calibrate(z, y, 12)
    assert r["nll_after"] < plain["nll_after"] - 0.05
    assert r["accuracy_after"] > r["accuracy_before"]  # the biases move decisions towards common classes


def test_a_class_absent_from_the_fit_split_keeps_bias_zero():
    z, y = planted(n=400, c=7, seed=4)
    y = np.where(y >= 5, 4, y)
    r = cal.calibrate(z, y, 7, per_class_bias=True)  # classes 5 and 6 have no image at all
    assert r["biases"][6] == 0.0
    assert r["biases"][5] == 0.0
    assert any(b != 0 for b in r["biases"][:5])
    assert any("no image in the fit split" in n for n in r["notes"])


def test_an_all_correct_run_says_so():
    z = np.random.default_rng(0).normal(size=(60, 4))
    z[np.arange(60), np.arange(60) % 4] += 30  # the true class always far ahead
    r = cal.calibrate(z, np.arange(60) % 4, 4)
    assert r["accuracy_before"] == 1.0
    assert r["ece_after"] <= r["ece_before"] + 1e-9
    assert r["temperature"] < 1
    assert any("every image of the fit split is predicted right" in n for n in r["notes"])


def test_the_split_is_seeded_stratified_and_disjoint():
    y = np.repeat(np.arange(5), [40, 20, 3, 1, 16])
    fit, held = cal.split(y, 0.5, seed=1)
    assert np.array_equal(np.sort(np.concatenate([fit, held])), np.arange(len(y)))
    assert np.array_equal(fit, cal.split(y, 0.5, seed=1)[0])
    assert not np.array_equal(fit, cal.split(y, 0.5, seed=2)[0])
    for c, n in enumerate([40, 20, 3, 1, 16]):
        assert abs(np.sum(y[fit] == c) - n / 2) <= 1
    fit, held = cal.split(y, 0.25, seed=0)
    assert abs(len(fit) - 20) <= 3


def test_too_few_images_is_one_line():
    z, y = planted(n=15)
    with pytest.raises(InputError, match="at least 20 images") as err:
        cal.calibrate(z, y, 12)
    assert "\n" not in str(err.value)
    z, y = planted(n=40)
    with pytest.raises(InputError, match="--fit-fraction"):
        cal.calibrate(z, y, 12, fraction=0.05)


# -- through the store and the command line -------------------------------------------------


@pytest.fixture
def zoo(tmp_path):
    home = tmp_path / "home"
    store = Store.open(home)
    ingest_library(store, LIBRARY, "zoo", FakeEncoder(CONCEPTS), template="bare")
    return home, store


def fresh(*args, home):
    """The command in a new process: what one process stores, the next one reads."""
    return fresh_process(FRESH_FAKE, "--home", home, *args)


@pytest.mark.parametrize("run", [invoke_fake, pytest.param(fresh, marks=pytest.mark.slow)], ids=["in-process", "fresh"])
def test_calibrate_stores_what_explain_calibrated_uses(zoo, tmp_path, run):
    home, store = zoo
    _lib, _, y, z = plant_run(store)
    r = run(
        "calibrate",
        "--library",
        "zoo",
        "--run",
        "planted",
        "--json",
        "--plot",
        str(tmp_path / "rel.png"),
        "--html",
        str(tmp_path / "rel.html"),
        home=home,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    for key in (
        "ece_before",
        "ece_after",
        "nll_before",
        "nll_after",
        "accuracy_before",
        "accuracy_after",
        "accuracy_before_ci95",
        "accuracy_after_ci95",
        "temperature",
        "bins",
    ):
        assert key in report, key
    assert report["temperature"] == pytest.approx(4.0, rel=0.25)
    assert report["ece_after"] < report["ece_before"]
    assert report["stored"]
    assert report["run"] == "planted"
    assert len(report["bins"]) == 15
    assert set(report["bins"][0]) == {"lower", "upper", "before", "after"}
    assert (tmp_path / "rel.png").read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "rel.html").read_text()
    assert "<svg" in page
    assert "http" not in page.split("<svg", 1)[0].replace("http://www.w3.org", "")
    # the same fit in-process (independent of the command): the figures agree
    again = cal.calibrate(z, y, len(LIBRARY))
    assert again["temperature"] == pytest.approx(report["temperature"], rel=1e-6)
    text = run("libraries", home=home)
    assert text.returncode == 0
    assert f"T {report['temperature']:.3g} (mean)" in text.stdout
    # explain --calibrated: the probabilities are the stored temperature's softmax over all classes
    (tmp_path / "x.png").write_bytes(planted_png(["green", "fur"]))
    plain = run("explain", str(tmp_path / "x.png"), "--library", "zoo", "--json", home=home)
    done = run("explain", str(tmp_path / "x.png"), "--library", "zoo", "--json", "--calibrated", home=home)
    assert plain.returncode == 0, done.stderr
    assert done.returncode == 0, done.stderr
    p, q = json.loads(plain.stdout), json.loads(done.stdout)
    assert p["calibration"] is None
    assert q["calibration"]["temperature"] == report["temperature"]
    assert q["calibration"]["run"] == "planted"
    assert q["calibration"]["per_class_bias"] is False
    scores = np.array([c["score"] for c in q["classes"]])
    all_scores = np.array([c["score"] for c in p["classes"]])
    assert np.allclose(scores, all_scores)
    # the whole distribution: the shown classes' probabilities by the formula, from scores of all 5 classes
    expect = calibrated_softmax(all_scores, p["logit_scale"], report["temperature"])  # top 5 of 5: every class
    assert np.allclose([c["probability"] for c in q["classes"]], expect, atol=1e-9)
    assert [c["uncalibrated_probability"] for c in q["classes"]] == [c["probability"] for c in p["classes"]]
    text = run("explain", str(tmp_path / "x.png"), "--library", "zoo", "--calibrated", home=home)
    assert "probabilities calibrated: temperature" in text.stdout
    assert "(uncalibrated " in text.stdout


def test_per_class_bias_through_the_cli_and_the_latest_wins(zoo, tmp_path, monkeypatch):
    home, store = zoo
    install_fake(monkeypatch, CONCEPTS)
    plant_run(store)
    first = CliRunner().invoke(cli, ["--home", str(home), "calibrate", "--library", "zoo", "--json"])
    second = CliRunner().invoke(
        cli, ["--home", str(home), "calibrate", "--library", "zoo", "--per-class-bias", "--seed", "3", "--json"]
    )
    assert first.exit_code == 0, second.output
    assert second.exit_code == 0, second.output
    b = json.loads(second.stdout)
    assert b["per_class_bias"]
    assert len(b["biases"]) == len(LIBRARY)
    assert b["seed"] == 3
    from whyclip.store.db.calibrations import latest_calibration, list_calibrations

    lib = store.load("zoo")
    assert len(list_calibrations(store.engine, lib.info.id)) == 2  # the older one is kept
    latest = latest_calibration(store.engine, lib.info.id, "mean")
    assert latest.id == b["calibration_id"]
    assert np.allclose(latest.biases, b["biases"])
    (tmp_path / "x.png").write_bytes(planted_png(["stripes"]))
    out = CliRunner().invoke(
        cli, ["--home", str(home), "explain", str(tmp_path / "x.png"), "--library", "zoo", "--json", "--calibrated"]
    )
    q = json.loads(out.stdout)
    names = list(LIBRARY)
    scores = np.array([next(c["score"] for c in q["classes"] if c["class"] == n) for n in names])
    expect = calibrated_softmax(scores, q["logit_scale"], b["temperature"], np.array(b["biases"]))
    got = [next(c["probability"] for c in q["classes"] if c["class"] == n) for n in names]
    assert np.allclose(got, expect, atol=1e-9)
    assert q["calibration"]["per_class_bias"] is True
    probs = [c["probability"] for c in q["classes"]]
    assert probs == sorted(probs, reverse=True)  # with biases, the calibrated logits order the classes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["calibrate", "--library", "zoo", "--run", "nope"], "has no run 'nope'"),
        (["calibrate", "--library", "nowhere"], "no library 'nowhere'"),
        (["calibrate", "--library", "zoo", "--fit-fraction", "1.5"], "--fit-fraction"),
        (["calibrate", "--library", "zoo", "--plot", "x.txt"], "must end in .png"),
    ],
)
def test_bad_calibrate_input_is_one_line(zoo, args, message):
    home, store = zoo
    plant_run(store)
    r = invoke_fake(*args, home=home)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_explain_calibrated_without_a_calibration_is_one_line(zoo, tmp_path):
    home, store = zoo
    (tmp_path / "x.png").write_bytes(planted_png(["green"]))
    r = invoke_fake("explain", str(tmp_path / "x.png"), "--library", "zoo", "--calibrated", home=home)
    assert r.returncode == 1
    assert "has no calibration: run 'whyclip calibrate --library zoo'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr
    plant_run(store)
    assert CliRunner().invoke(cli, ["--home", str(home), "calibrate", "--library", "zoo"]).exit_code == 0
    r = invoke_fake(
        "explain", str(tmp_path / "x.png"), "--library", "zoo", "--calibrated", "--aggregate", "max", home=home
    )
    assert r.returncode == 1
    assert "calibrated for the mean aggregate, not max" in r.stderr


def test_too_few_images_through_the_cli_and_dry_run_stores_nothing(zoo):
    home, store = zoo
    plant_run(store, n=12)
    r = invoke_fake("calibrate", "--library", "zoo", home=home)
    assert r.returncode == 1
    assert "at least 20 images" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    plant_run(store, name="big", n=200)
    r = invoke_fake("calibrate", "--library", "zoo", "--dry-run", home=home)
    assert r.returncode == 0
    assert "stored as" not in r.stdout
    assert "ECE (15 bins)" in r.stdout
    from whyclip.store.db.calibrations import list_calibrations

    assert list_calibrations(store.engine) == []


def test_audit_reports_carry_the_calibration(zoo, tmp_path):
    home, store = zoo
    _lib, _, y, z = plant_run(store, name="first")
    run = lambda *a: CliRunner().invoke(cli, ["--home", str(home), *a])  # noqa: E731
    before = json.loads(run("audit", "--library", "zoo", "--run", "first", "--format", "json").stdout)["calibration"]
    assert before["calibrated"] is False
    assert "whyclip calibrate --library zoo --run first" in before["note"]
    assert before["ece_before"] == pytest.approx(ece_loop(cal.probabilities(z), y), abs=1e-9)  # every image, T = 1
    assert before["nll_before"] == pytest.approx(nll_loop(z, y), rel=1e-9)
    assert "ece_after" not in before
    assert run("calibrate", "--library", "zoo", "--run", "first").exit_code == 0
    fitted = json.loads(run("audit", "--library", "zoo", "--run", "first", "--format", "json").stdout)["calibration"]
    stored = json.loads(run("calibrate", "--library", "zoo", "--run", "first", "--json", "--dry-run").stdout)
    assert fitted["calibrated"]
    assert fitted["ece_after"] == pytest.approx(stored["ece_after"])
    assert "held-out" in fitted["measured_on"]
    # another run of the same version: the stored calibration applied to all of its images
    _, _, y2, z2 = plant_run(store, name="second", seed=9)
    other = json.loads(run("audit", "--library", "zoo", "--run", "second", "--format", "json").stdout)["calibration"]
    assert other["fitted_on"] == "first"
    assert "every image of this run (400" in other["measured_on"]
    assert other["ece_after"] == pytest.approx(ece_loop(cal.probabilities(z2, fitted["temperature"]), y2), abs=1e-9)
    assert other["ece_after"] < other["ece_before"]
    text = run("audit", "--library", "zoo", "--run", "second").stdout
    assert "calibration: temperature" in text
    assert "before: ECE" in text
    assert "after:  ECE" in text
    out = tmp_path / "a.html"
    assert run("audit", "--library", "zoo", "--run", "second", "--format", "html", "--out", str(out)).exit_code == 0
    page = out.read_text()
    assert 'id="calibration"' in page
    assert page.count("<svg") >= 2
    assert "reliability" in page.lower()
    folder = tmp_path / "csv"
    assert run("audit", "--library", "zoo", "--run", "second", "--format", "csv", "--out", str(folder)).exit_code == 0
    import csv

    (row,) = list(csv.DictReader((folder / "calibration.csv").open()))
    assert float(row["ece_after"]) == pytest.approx(other["ece_after"])
    bins = list(csv.DictReader((folder / "reliability.csv").open()))
    assert len(bins) == 15
    assert sum(int(b["after_count"]) for b in bins) == 400


def test_deleting_the_library_deletes_its_calibrations(zoo):
    home, store = zoo
    plant_run(store)
    run = lambda *a: CliRunner().invoke(cli, ["--home", str(home), *a])  # noqa: E731
    assert run("calibrate", "--library", "zoo").exit_code == 0
    done = run("delete", "zoo", "--with-runs", "--yes")
    assert done.exit_code == 0, done.output
    from whyclip.store.db.calibrations import list_calibrations

    assert list_calibrations(store.engine) == []


def test_calibrations_on_sqlite_and_postgresql(tmp_path, db_url, monkeypatch):
    """Stored, read back (the newest wins, biases exact) and deleted with the library, on both databases."""
    install_fake(monkeypatch, CONCEPTS)
    home = tmp_path / "pghome"
    store = Store.open(home, db_url)
    ingest_library(store, LIBRARY, "zoo", FakeEncoder(CONCEPTS), template="bare")
    plant_run(store, n=120)
    base = ["--home", str(home)] + (["--db", db_url] if db_url else [])
    run = lambda *a: CliRunner().invoke(cli, [*base, *a])  # noqa: E731
    assert run("calibrate", "--library", "zoo").exit_code == 0
    done = run("calibrate", "--library", "zoo", "--per-class-bias", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    from whyclip.store.db.calibrations import latest_calibration

    latest = latest_calibration(store.engine, store.load("zoo").info.id)
    assert latest.id == report["calibration_id"]
    assert latest.biases.tolist() == report["biases"]
    assert latest.created_at.tzinfo is not None
    assert latest.report["ece_after"] == report["ece_after"]
    (tmp_path / "x.png").write_bytes(planted_png(["fur"]))
    out = run("explain", str(tmp_path / "x.png"), "--library", "zoo", "--calibrated", "--json")
    assert out.exit_code == 0
    assert json.loads(out.stdout)["calibration"]["calibration_id"] == latest.id
    assert run("delete", "zoo", "--with-runs", "--yes").exit_code == 0
    assert latest_calibration(store.engine, latest.library_id) is None
