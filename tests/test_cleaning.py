"""Answer parsing, the cleaning steps and their report, reading CLASSES, the answer cache,
and ``whyclip clean`` on the paper's own files (from ../shared, skipped when absent)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

from tests.helpers import shared_file
from whyclip.ingest.generate.classes import read_classes
from whyclip.ingest.generate.cleaning import CleanSettings, clean_classes, not_visual_reason
from whyclip.ingest.generate.llm_prompts import BUILTIN, example_lines, load_prompt
from whyclip.ingest.generate.parsing import parse_answer, parse_list
from whyclip.store.errors import InputError
from whyclip.ui.cli.main import cli


@pytest.mark.parametrize(
    ("answer", "items", "prose"),
    [
        ("- green skin.\n- big eyes", ["green skin", "big eyes"], []),
        ("* green skin\n* big eyes.", ["green skin", "big eyes"], []),
        ("1. green skin.\n2) big eyes\n(3) **webbed feet**", ["green skin", "big eyes", "webbed feet"], []),
        (
            "Here are some features:\n- green skin\n- big eyes\nI hope this helps.",
            ["green skin", "big eyes"],
            ["Here are some features:", "I hope this helps."],
        ),
        (" green skin\n- big eyes", ["green skin", "big eyes"], []),  # continues the prompt's open "-"
        ("green skin\nbig eyes...\nSome features:", ["green skin", "big eyes..."], ["Some features:"]),
        ("", [], []),
    ],
)
def test_list_answers_are_parsed(answer, items, prose):
    parsed = parse_list(answer)
    assert (parsed.items, parsed.prose) == (items, prose)


def test_a_first_unbulleted_line_is_prose_when_the_prompt_has_no_open_bullet():
    assert parse_list("green skin\n- big eyes", continues_bullet=False).prose == ["green skin"]


def test_structured_answers_and_their_fallback():
    assert parse_answer('{"descriptors": ["green skin.", " big eyes "]}', structured=True).items == [
        "green skin",
        "big eyes",
    ]
    assert parse_answer('["green skin"]', structured=True).items == ["green skin"]
    assert parse_answer("- green skin", structured=True).items == ["green skin"]  # not JSON: read as a list


def test_the_default_prompt_asks_the_seed_question_with_its_own_examples():
    prompt = load_prompt(None)
    assert prompt.render("tree_frog").endswith(
        "Q: What are useful features for distinguishing a tree frog in a photo?\n"
        "A: There are several useful visual features to tell there is a tree frog in a photo:\n-"
    )
    assert len(prompt.examples) == 10
    assert prompt.examples[0] == "a very small bird"
    assert prompt.opens_a_bullet
    assert not any(w in BUILTIN["default"] for w in ("lemur", "television"))  # not the paper's examples
    assert example_lines("- a {class} shape\n- a tail\nno") == ["a tail"]


def test_every_step_reports_what_it_caught_and_keep_and_drop_change_the_action():
    classes = [
        (
            "tree frog",
            [
                "green skin",
                "Green skin.",
                "a very small bird",
                "a tree frog on a leaf",
                "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen",
                "an endangered species",
                "smooth",
            ],
        ),
        ("cat", ["smooth", "whiskers"]),
        ("dog", ["smooth"]),
        ("empty", []),
    ]
    cleaned, report = clean_classes(classes, ["A very small bird."], CleanSettings.with_overrides(shared_min=3))
    assert [(f.class_name, f.descriptor, f.step, f.action) for f in report.findings] == [
        ("tree frog", "Green skin.", "duplicate", "dropped"),
        ("tree frog", "a very small bird", "copied", "dropped"),
        ("tree frog", "a tree frog on a leaf", "class-name", "flagged"),
        ("tree frog", classes[0][1][4], "long", "flagged"),
        ("tree frog", "an endangered species", "not-visual", "flagged"),
        ("tree frog", "smooth", "shared", "flagged"),
        ("cat", "smooth", "shared", "flagged"),
        ("dog", "smooth", "shared", "flagged"),
    ]
    assert cleaned[0] == (
        "tree frog",
        ["green skin", "a tree frog on a leaf", classes[0][1][4], "an endangered species", "smooth"],
    )
    assert report.empty_classes == [{"class": "empty", "reason": "no descriptors in the input"}]
    assert (report.n_lines_in, report.n_lines_out) == (10, 8)
    assert "dropped (copied): 'tree frog': 'a very small bird'" in report.to_text()
    assert json.loads(json.dumps(report.to_json()))["counts"]["shared"] == 3

    kept, report2 = clean_classes(
        classes, ["a very small bird"], CleanSettings.with_overrides(keep=["copied"], drop=["shared"], shared_min=3)
    )
    assert "a very small bird" in kept[0][1]
    assert "smooth" not in kept[0][1]
    assert report2.empty_classes[0] == {"class": "dog", "reason": "every line dropped by cleaning"}
    with pytest.raises(InputError, match="both --keep and --drop"):
        CleanSettings.with_overrides(keep=["long"], drop=["long"])


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("threatened species", "'threatened' (conservation status)"),
        ("population of less than 10,000 birds", "'population' (population)"),
        ("native to South America", "'native to' (geography)"),
        ("migrates south in winter", "'migrates' (behaviour over time)"),
        ("costs about $5", "'costs' (price)"),
        ("sold for €20", "a currency sign (price)"),
        ("a sweet smell", "'smell' (other senses)"),
        ("a body with a sound hole", None),
        ("green and brown scales", None),
    ],
)
def test_the_not_visual_rule(text, rule):
    assert not_visual_reason(text) == rule


def test_classes_from_text_json_csv_and_a_library(tmp_path):
    (tmp_path / "a.txt").write_text("tree frog\n\n cat \ntree frog\n")
    got = read_classes(tmp_path / "a.txt")
    assert got.names == ["tree frog", "cat"]
    assert got.library is None
    assert "listed twice" in got.warnings[0]
    (tmp_path / "b.json").write_text('["tree frog", "cat"]')
    assert read_classes(tmp_path / "b.json").names == ["tree frog", "cat"]
    (tmp_path / "c.csv").write_text("class,count\ntree frog,3\ncat,1\n")
    assert read_classes(tmp_path / "c.csv").names == ["tree frog", "cat"]
    (tmp_path / "d.csv").write_text("class,descriptor\ntree frog,green\ncat,\n")
    assert read_classes(tmp_path / "d.csv").library == {"tree frog": ["green"], "cat": []}
    (tmp_path / "e.json").write_text('{"tree frog": ["green", "green"], "cat": []}')
    assert read_classes(tmp_path / "e.json").library == {"tree frog": ["green", "green"], "cat": []}
    (tmp_path / "f.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="a JSON list of class names"):
        read_classes(tmp_path / "f.json")


def test_the_answer_cache_keeps_the_first_answer_and_an_older_store_gains_it(store):
    """A store at revision 0004 (before the answer cache) is refused by reads, and a write
    open adds the table (revision 0005)."""
    from sqlalchemy import inspect, text

    from whyclip.store import Store
    from whyclip.store.db import answer_cache, migrations
    from whyclip.store.errors import StoreError

    now = dt.datetime.now(dt.timezone.utc)
    first = answer_cache.CachedAnswer("k" * 64, "http://x/v1", "m", "q", {"temperature": 0.0}, "- a", "list", now)
    answer_cache.save(store.engine, [first])
    answer_cache.save(
        store.engine, [answer_cache.CachedAnswer("k" * 64, "http://x/v1", "m", "q", {}, "- b", "list", now)]
    )
    assert answer_cache.lookup(store.engine, ["k" * 64, "z" * 64])["k" * 64].answer == "- a"
    from alembic import command

    from whyclip.store.db.engine import begin_write

    with begin_write(store.engine) as conn:  # the revisions after 0005 undone by their own downgrades
        command.downgrade(migrations.alembic_config(conn), "0005")
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE llm_answers"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0004'"))
    store.engine.dispose()
    with pytest.raises(StoreError, match="whyclip migrate"):
        Store.open(store.home, create=False)
    reopened = Store.open(store.home)
    with reopened.engine.connect() as conn:
        assert migrations.current_revision(conn) == migrations.state(conn).head
        assert "llm_answers" in inspect(conn).get_table_names()


def test_clean_writes_a_cleaned_copy_and_the_report(tmp_path):
    lib = tmp_path / "lib.json"
    lib.write_text(json.dumps({"frog": ["green", "green", "a very small bird"], "cat": []}))
    result = CliRunner().invoke(
        cli, ["clean", str(lib), "--out", str(tmp_path / "clean.json"), "--report", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "clean.json").read_text()) == {"frog": ["green"], "cat": []}
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["counts"]["duplicate"] == 1
    assert report["counts"]["copied"] == 1
    assert "empty: 'cat': no descriptors in the input" in result.stdout


@pytest.mark.shared
def test_clean_finds_the_papers_copied_lines_and_empty_classes():
    prompt = shared_file("../prompts/cbd_two_shot.txt")
    runner = CliRunner()
    imagenet = runner.invoke(
        cli, ["clean", str(shared_file("descriptors_imagenet.json")), "--prompt", str(prompt), "--json"]
    )
    report = json.loads(imagenet.stdout)
    copied = [f for f in report["findings"] if f["step"] == "copied"]
    assert len(copied) == 270
    assert len({f["class_name"] for f in copied}) == 114
    # SOURCE.md says 14 primate classes; counted here it is 16 (14 apes and monkeys, and 2 lemurs)
    assert sum(f["descriptor"] == "four-limbed primate" for f in copied) == 16
    food = json.loads(runner.invoke(cli, ["clean", str(shared_file("descriptors_food101.json")), "--json"]).stdout)
    assert [e["class"] for e in food["empty_classes"]] == [
        "donuts",
        "french fries",
        "fried calamari",
        "mussels",
        "oysters",
    ]
    places = json.loads(runner.invoke(cli, ["clean", str(shared_file("descriptors_places365.json")), "--json"]).stdout)
    assert [e["class"] for e in places["empty_classes"]] == ["corn_field"]
    assert places["counts"]["duplicate"] == 3
