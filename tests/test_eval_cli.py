"""whyclip eval / runs / audit through the command line: end to end on the tiny random CLIP
(drawn sample images, an unreadable one in the middle, the HTML report parsed and checked
against the JSON), and bad input through the fake encoder."""

from __future__ import annotations

import csv
import json
import shutil
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from tests.helpers import ROOT
from tests.helpers.cli import invoke
from tests.helpers.fakes import install_fake
from tests.helpers.planted import CONCEPTS, IMAGES, LIBRARY, write_dataset
from whyclip.ui.cli.main import cli
from whyclip.ui.demo.samples import SAMPLE_CLASSES, draw_samples

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL


def whyclip(*args: str, home):
    return invoke(*args, home=home)


class Cells(HTMLParser):
    """``data-value`` of every cell, by table id and row."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.methods: list[str] = []
        self.svgs = 0
        self.external: list[str] = []
        self._table = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id")
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
            if "data-method" in a:
                self.methods.append(a["data-method"])
        elif tag == "td" and self._table and "data-value" in a:
            self.tables[self._table][-1].append(a["data-value"])
        elif tag == "svg":
            self.svgs += 1
        for key in ("src", "href"):
            if key in a and not str(a[key]).startswith(("#", "data:")):
                self.external.append(a[key])

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None


def test_eval_and_audit_end_to_end_on_the_tiny_clip(tiny_model, tmp_path):
    home = tmp_path / "home"
    r = whyclip(
        "ingest", str(ROOT / "ui" / "demo" / "library.json"), "--library", "demo", "--model", str(tiny_model), home=home
    )
    assert r.returncode == 0, r.stderr
    data = tmp_path / "samples"
    for path in draw_samples(tmp_path / "drawn"):
        (data / SAMPLE_CLASSES[path.name]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / SAMPLE_CLASSES[path.name] / path.name)
    (data / "banana" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # sorts between the others
    r = whyclip("eval", str(data), "--library", "demo", "--name", "drawn", home=home)
    assert r.returncode == 1, r.stderr  # an image was skipped
    assert "broken.png" in r.stderr
    assert "truncated or corrupt" in r.stderr
    assert "run 'drawn' of library demo v1: 6 images" in r.stdout
    assert "images/s" in r.stdout
    assert "baseline (class name)" in r.stdout
    assert "random words (mean, 5 draws)" in r.stdout
    assert "shuffled descriptor words (mean)" in r.stdout
    r = whyclip("runs", "--json", home=home)
    (run,) = json.loads(r.stdout)
    assert run["name"] == "drawn"
    assert run["n_images"] == 6
    assert len(run["details"]["skipped"]) == 1

    r = whyclip("audit", "--library", "demo", "--format", "json", home=home)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["run"]["name"] == "drawn"
    assert report["aggregate"] == "mean"
    aggs = ("mean", "centroid", "max")
    assert {a["method"] for a in report["accuracy"]} == {
        *aggs,
        "baseline",
        *(f"{p}:{g}" for p in ("control", "bare", "swap") for g in aggs),
        *(f"words{j}:{g}" for j in range(5) for g in aggs),
    }
    assert all(a["ci95"][0] <= a["top1"] <= a["ci95"][1] for a in report["accuracy"])
    rw = report["controls"]["random_words"]
    assert rw["draws"] == 5
    assert {"accuracy_mean", "accuracy_sd", "ci95", "p_value"} <= set(rw)
    assert {"name_share", "description_share", "ci95", "p_value"} <= set(report["controls"]["name_description"])
    assert sum(c["n"] for c in report["per_class"]) == 6
    assert sum(d["top_correct"] + d["top_wrong"] for d in report["drivers"]) == 6

    out = tmp_path / "report.html"
    r = whyclip("audit", "--library", "demo", "--run", "drawn", "--format", "html", "--out", str(out), home=home)
    assert r.returncode == 0, r.stderr
    assert out.is_file(), r.stderr
    page = Cells()
    page.feed(out.read_text(encoding="utf-8"))
    assert page.external == []
    assert page.svgs >= 2
    assert page.methods == [a["method"] for a in report["accuracy"]]
    assert [[float(x) for x in row] for row in page.tables["accuracy"] if row] == [
        [a["top1"], a["top5"], a["n"]] for a in report["accuracy"]
    ]
    d = report["controls"]["deletion"]
    if d.get("images"):
        rows = [row for row in page.tables["deletion"] if row]
        assert [float(x) for x in rows[0]] == [d["score_drop_top"], d["accuracy_top_removed"]]
        assert [float(x) for x in rows[1]] == [d["score_drop_random"], d["accuracy_random_removed"]]
    drivers = [x for x in report["drivers"] if x["top_correct"] + x["top_wrong"]]
    assert [[float(v) for v in row] for row in page.tables["drivers"] if row] == [
        [x["predicted"], x["top_correct"], x["top_wrong"], x["mean_margin"]] for x in drivers
    ]

    folder = tmp_path / "tables"
    r = whyclip("audit", "-l", "demo", "--format", "csv", "--out", str(folder), home=home)
    assert r.returncode == 0, r.stderr
    with open(folder / "accuracy.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(x["method"], float(x["top1"])) for x in rows] == [(a["method"], a["top1"]) for a in report["accuracy"]]

    r = whyclip("audit", "-l", "demo", home=home)  # text
    assert r.returncode == 0
    assert "random-word control" in r.stdout
    assert "hygiene" in r.stdout


@pytest.fixture
def fake_cli(tmp_path, monkeypatch):
    install_fake(monkeypatch, CONCEPTS)
    lib = tmp_path / "planted.json"
    lib.write_text(json.dumps(LIBRARY), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(cli, ["ingest", str(lib), "--library", "planted", "--template", "bare"])
    assert result.exit_code == 0, result.output
    return runner, write_dataset(tmp_path / "data")


def one_line_error(result, message: str) -> None:
    assert result.exit_code != 0
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0], result.stderr


def test_eval_prints_accuracy_and_the_audit_formats(fake_cli, tmp_path, monkeypatch):
    runner, data = fake_cli
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["eval", str(data), "-l", "planted", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["run"]["name"] == "data"
    assert out["run"]["n_images"] == 9
    assert out["confusions"][0]["predicted"] == "banana"
    assert out["confusions"][0]["true"] == "sunflower"
    result = runner.invoke(cli, ["audit", "-l", "planted", "--format", "html"], catch_exceptions=False)
    assert result.exit_code == 0
    assert (tmp_path / "planted-data-audit.html").is_file()
    page = (tmp_path / "planted-data-audit.html").read_text(encoding="utf-8")
    assert "DESIGN.md" not in page  # a file users do not have (issue 21, item 10)
    assert "measured from the midpoint of S(predicted) and S(true)" in page
    assert "Contrast of two classes" in page
    assert "wrote planted-data-audit.html" in result.stderr


def test_confusions_name_each_descriptors_class_and_read_in_s(fake_cli, tmp_path, monkeypatch):
    """Eval's and the audit's confusions (text and HTML) say whose descriptor each one is and
    which class it pulls toward, in S (x the logit scale); the JSON keeps raw values. The audit
    text prints the per-class name/description lines under their own control, and the FuDD
    hint names the real library and dataset (issue 21, items 4, 14, 18)."""
    runner, data = fake_cli
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(cli, ["eval", str(data), "-l", "planted"]).exit_code == 0
    report = json.loads(runner.invoke(cli, ["audit", "-l", "planted", "--format", "json"]).stdout)
    scale = report["library"]["logit_scale"]
    assert scale > 1  # the fake model's scale: a wrong unit would show
    text = runner.invoke(cli, ["audit", "-l", "planted"]).stdout
    eval_text = runner.invoke(cli, ["eval", str(data), "-l", "planted", "--name", "again"]).stdout
    pair = report["confusions"][0]
    for side, toward in (("towards_predicted", pair["predicted"]), ("towards_true", pair["true"])):
        shown = ", ".join(f"{r['text']} [{r['class']}] {r['contribution'] * scale:+.2f}" for r in pair[side][:3])
        assert f"pulls toward {toward}: {shown}" in text
        assert f"pulls toward {toward}: {shown}" in eval_text
    assert "supported" not in text
    assert "measured from the midpoint of S(predicted) and S(true)" in text
    lines = text.splitlines()
    at = next(i for i, x in enumerate(lines) if x.startswith("name vs description:"))
    per_class = report["controls"]["name_description"].get("per_class", [])
    assert per_class
    for k, row in enumerate(per_class[:10], start=1):
        assert lines[at + k].startswith(f"  {row['class']} (n={row['n']}): name ")
    fudd = next(x for x in lines if x.startswith("FuDD pair descriptors:"))
    assert "--library planted'" in fudd
    assert f"whyclip eval {data} --library planted" in fudd
    assert "NAME" not in fudd
    assert runner.invoke(cli, ["audit", "-l", "planted", "--run", "data", "--format", "html"]).exit_code == 0
    page = (tmp_path / "planted-data-audit.html").read_text(encoding="utf-8")
    r = pair["towards_predicted"][0]
    assert f'data-value="{r["contribution"]}">{r["contribution"] * scale:+.2f}</td>' in page
    assert f"pulls toward {pair['predicted']}</th><th>descriptor of</th>" in page


def test_eval_bad_input_is_one_line(fake_cli, tmp_path):
    runner, data = fake_cli
    (tmp_path / "empty").mkdir()
    one_line_error(runner.invoke(cli, ["eval", str(tmp_path / "empty"), "-l", "planted"]), "no class subfolders")
    wrong = write_dataset(tmp_path / "wrong", dict(IMAGES, cat=[("c.png", "frog")]))
    one_line_error(runner.invoke(cli, ["eval", str(wrong), "-l", "planted"]), "'cat' (1 images")
    one_line_error(runner.invoke(cli, ["eval", str(data), "-l", "toads"]), "no library 'toads'")
    one_line_error(runner.invoke(cli, ["audit", "-l", "planted"]), "has no evaluation runs yet")
    assert runner.invoke(cli, ["eval", str(data), "-l", "planted", "--name", "a"]).exit_code == 0
    one_line_error(runner.invoke(cli, ["eval", str(data), "-l", "planted", "--name", "a"]), "already has a run 'a'")
    one_line_error(runner.invoke(cli, ["audit", "-l", "planted", "--run", "b"]), "has no run 'b'")
    result = runner.invoke(cli, ["eval", str(wrong), "-l", "planted", "--skip-unmatched"])
    assert result.exit_code == 0
    assert "9 images" in result.stdout
