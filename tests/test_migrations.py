"""Migrations: legacy stores (meta schema_version 1, 2, 3) are stamped and upgraded, all or
nothing; read commands never migrate; newer stores are refused; prompts end up stored exactly."""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import text

from whyclip.store import Store, StoreError
from whyclip.store.db import migrations
from whyclip.store.db.engine import begin_write, make_engine
from whyclip.store.db.schema import Base
from whyclip.store.method import prompts
from whyclip.store.method.templates import Template, baseline_prompt
from whyclip.ui.cli.main import cli

FIXTURE = Path(__file__).parent / "data" / "store_schema3.sql"  # a store written by the whyclip before Alembic
LIB = {"tree_frog": ["antennae", "canopy", "used for jumping", "has webbed feet"], "cat": ["whiskers"], "empty": []}


def schema3_store(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    db = home / "whyclip.db"
    with sqlite3.connect(db) as con:
        con.executescript(FIXTURE.read_text())
        con.execute("PRAGMA journal_mode=WAL")  # as whyclip always left its databases
    con.close()
    return db


def legacy_store(home: Path, version: int) -> Path:
    """A store at meta schema_version ``version``, shaped by the frozen revisions, with one
    paper-template library whose prompts are "" (left to the template, as those whyclips did)."""
    home.mkdir(parents=True, exist_ok=True)
    db = home / "whyclip.db"
    engine = make_engine(f"sqlite:///{db}")
    with begin_write(engine) as conn:
        command.upgrade(migrations.alembic_config(conn), migrations.LEGACY[version])
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("INSERT INTO meta VALUES ('schema_version', :v)"), {"v": str(version)})
        conn.execute(
            text(
                "INSERT INTO libraries (id, name, version, status, created_at, encoder_id, encoder_name, dim,"
                " logit_scale, template, baseline_template, aggregate, n_classes, n_descriptors, n_prompts, source,"
                " source_sha256,"
                " index_key, index_factory, recall_at_10) VALUES (1, 'old', 1, 'ready', '2025-01-02 03:04:05.000000',"
                " 'e', 'e', 32, 100.0, 'paper', 'a photo of a {class}.', 'mean', 2, 2, 4, '', '', 'k', 'Flat', 1.0)"
            )
        )
        conn.execute(
            text("INSERT INTO classes VALUES (1, 1, 0, 'tree_frog', '', 2), (2, 1, 1, 'cat', 'kept as is', 0)")
        )
        norm = ("norm, ", "0.5, ") if version < 3 else ("", "")
        conn.execute(
            text(
                f"INSERT INTO descriptors (id, library_id, class_id, position, text, prompt, {norm[0]}truncated,"
                f" shared) VALUES (1, 1, 1, 0, 'antennae', '', {norm[1]}0, 1),"
                f" (2, 1, 1, 1, 'canopy', 'stored prompt', {norm[1]}0, 1)"
            )
        )
    engine.dispose()
    return db


def rows(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        out = list(con.iterdump())
    con.close()
    return out


def matches_models(home: Path) -> None:
    engine = make_engine(f"sqlite:///{home / 'whyclip.db'}")
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == migrations.state(conn).head
        assert conn.execute(text("SELECT count(*) FROM meta WHERE key = 'schema_version'")).scalar() == 0
    engine.dispose()


def test_a_fresh_store_built_by_the_revisions_matches_the_models(tmp_path):
    Store.open(tmp_path).engine.dispose()
    matches_models(tmp_path)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_legacy_store_is_refused_by_reads_then_stamped_and_upgraded(tmp_path, version):
    db = legacy_store(tmp_path, version)
    before = db.read_bytes()
    with pytest.raises(StoreError, match=rf"older whyclip \(revision 000{version}, .*run 'whyclip migrate'") as err:
        Store.open(tmp_path, create=False)
    assert "\n" not in str(err.value)
    assert db.read_bytes() == before
    store = Store.open(tmp_path)  # a write command migrates
    assert store.migration.current == f"000{version}"
    matches_models(tmp_path)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT prompt FROM descriptors ORDER BY id")).scalars().all() == [
            Template("paper").build("tree_frog", "antennae"),
            "stored prompt",
        ]
        assert conn.execute(text("SELECT baseline_prompt FROM classes ORDER BY id")).scalars().all() == [
            baseline_prompt("a photo of a {class}.", "tree_frog"),
            "kept as is",
        ]
    info = store.library("old")
    assert info.prompt_rule == "paper/1"
    assert info.created_at == dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def test_a_store_written_before_alembic_migrates_through_the_cli(tmp_path):
    db = schema3_store(tmp_path)
    before = db.read_bytes()
    run = CliRunner().invoke(cli, ["--home", str(tmp_path), "libraries"])
    assert run.exit_code == 1
    assert "run 'whyclip migrate'" in run.output
    assert run.output.count("\n") == 1
    dry = CliRunner().invoke(cli, ["--home", str(tmp_path), "migrate", "--dry-run"])
    head = migrations._script().get_current_head()
    assert dry.exit_code == 0
    assert f"current revision 0003, target {head}" in dry.output
    assert "would apply 0004" in dry.output
    assert db.read_bytes() == before
    done = CliRunner().invoke(cli, ["--home", str(tmp_path), "migrate"])
    assert done.exit_code == 0
    assert f"migrated from revision 0003 to {head}: applied 0004" in done.output
    matches_models(tmp_path)
    store = Store.open(tmp_path, create=False)
    builds = {
        "paper": Template("paper").build,
        "waffle": Template("A photo of a {class}, {which}.").build,
        "repr": Template("{descriptor!r} of {class}").build,
    }
    for name, build in builds.items():
        info = store.library(name)
        with store.engine.connect() as conn:
            got = conn.execute(
                text(
                    "SELECT c.name, d.text, d.prompt FROM descriptors d JOIN classes c ON c.id = d.class_id"
                    " WHERE d.library_id = :i"
                ),
                {"i": info.id},
            ).all()
        assert got, name
        assert all(p == build(c, d) for c, d, p in got), name
        assert info.prompt_rule == ("paper/1" if name == "paper" else "format/1")
        assert info.created_at.tzinfo == dt.timezone.utc
    again = CliRunner().invoke(cli, ["--home", str(tmp_path), "migrate"])
    assert again.exit_code == 0
    assert "nothing applied" in again.output


def test_a_migration_failing_half_way_changes_nothing(tmp_path, monkeypatch):
    """Revision 0004 adds a column and fills the baselines before the prompt rule fails."""
    db = schema3_store(tmp_path)
    want = rows(db)

    def boom(*_):
        raise RuntimeError("rule exploded")

    monkeypatch.setitem(prompts.RULES, 1, replace(prompts.RULES[1], prompt=boom))
    run = CliRunner().invoke(cli, ["--home", str(tmp_path), "migrate"])
    assert run.exit_code == 1
    assert (
        run.output
        == f"Error: migrating the whyclip database at sqlite:///{db} failed and changed nothing: rule exploded\n"
    )
    assert rows(db) == want


@pytest.mark.parametrize(
    ("sql", "shown"),
    [
        ("CREATE TABLE alembic_version (version_num VARCHAR(32)); INSERT INTO alembic_version VALUES ('9999')", "9999"),
        ("UPDATE meta SET value = '7' WHERE key = 'schema_version'", "schema 7"),
    ],
)
def test_a_store_from_a_newer_whyclip_is_refused(tmp_path, sql, shown):
    db = schema3_store(tmp_path)
    with sqlite3.connect(db) as con:
        con.executescript(sql)
    con.close()
    before = db.read_bytes()
    for create in (False, True):
        with pytest.raises(StoreError, match=rf"newer whyclip \(revision {shown}\): upgrade whyclip$"):
            Store.open(tmp_path, create=create)
    assert db.read_bytes() == before


def test_an_old_sqlite_is_refused_at_open(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite3.dbapi2, "sqlite_version_info", (3, 31, 1))
    with pytest.raises(StoreError, match=r"needs SQLite 3\.35 or newer, and this Python has 3\.31\.1"):
        Store.open(tmp_path)
    assert not (tmp_path / "whyclip.db").exists()


def test_two_openers_racing_on_a_fresh_database_both_see_the_finished_schema(tmp_path):
    import threading

    barrier, found, errors = threading.Barrier(2), [], []

    def open_it():
        barrier.wait()
        try:
            found.append(Store.open(tmp_path).store_id)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(found) == 2
    assert found[0] == found[1]
    matches_models(tmp_path)


def test_times_read_back_aware_in_utc(tmp_path):
    from tests.helpers.fakes import FakeEncoder
    from whyclip.ingest import ingest_library

    store = Store.open(tmp_path)
    start = dt.datetime.now(dt.timezone.utc)
    ingest_library(store, {"frog": ["green"]}, "t", FakeEncoder(["green"]))
    got = store.library("t").created_at
    assert got.tzinfo == dt.timezone.utc
    assert start <= got <= dt.datetime.now(dt.timezone.utc)
