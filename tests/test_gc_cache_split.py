"""``whyclip gc --cache`` keeps what is in use, the bare-descriptor vectors of explain's
name/description split included, and still removes what nothing uses (issue 21, item 1).

The planted eval world under the paper's template (a prompt is not its bare descriptor),
the fake encoder (it records every text it embeds), the command line in process. The
oracle is the set of texts each kind of row comes from, hashed as the cache hashes them.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.helpers.cli import invoke
from tests.helpers.fakes import install_fake
from tests.helpers.planted import CONCEPTS, LIBRARY, write_dataset
from whyclip.store import Store
from whyclip.store.db.embedding_cache import text_key
from whyclip.store.db.schema import EmbeddingRow
from whyclip.store.method.templates import Template

GONE = {"tree frog": ["a sticky tongue"], "owl": ["feathers", "big eyes"], "mole": ["velvet fur"]}


def _prompts(content: dict) -> set[str]:
    tmpl = Template("paper")
    return {tmpl.build(c, d) for c, ds in content.items() for d in ds} | {f"a photo of a {c}." for c in content}


def _bare(content: dict) -> set[str]:
    return {d for ds in content.values() for d in ds}


@pytest.fixture
def fake(monkeypatch):
    return install_fake(monkeypatch, CONCEPTS)


def run(home, *args):
    done = invoke(*args, home=home)
    assert done.returncode == 0, done.stderr
    return done


def _text_rows(home, encoder_id: str) -> set[str]:
    with Session(Store.open(home).engine) as s:
        return set(s.scalars(select(EmbeddingRow.text_sha256).where(EmbeddingRow.encoder_key == encoder_id)))


def test_gc_cache_keeps_the_split_and_removes_what_nothing_uses(tmp_path, fake):
    home, data = tmp_path / "home", write_dataset(tmp_path / "data")
    (tmp_path / "lib.json").write_text(json.dumps(LIBRARY))
    (tmp_path / "gone.json").write_text(json.dumps(GONE))
    run(home, "ingest", tmp_path / "lib.json", "-l", "shapes", "-t", "paper")
    run(home, "ingest", tmp_path / "gone.json", "-l", "gone", "-t", "paper")
    run(home, "eval", data, "-l", "shapes")  # embeds and caches the bare descriptors (and its controls)
    run(home, "delete", "gone", "--yes")
    enc_id = fake.info.id
    kept_texts = _prompts(LIBRARY) | _bare(LIBRARY)
    before = _text_rows(home, enc_id)
    assert {text_key(t) for t in kept_texts | _prompts(GONE)} <= before  # what gc must tell apart is there

    done = run(home, "gc", "--cache")

    after = _text_rows(home, enc_id)
    assert after == {text_key(t) for t in kept_texts}  # in use kept, the rest (gone's, eval's controls) removed
    n_prompts, n_split = len(_prompts(LIBRARY)), len(_bare(LIBRARY) - _prompts(LIBRARY))
    assert done.stdout.splitlines() == [
        f"removed 0 index folder(s) (0 bytes) and {len(before - after)} cache row(s) "
        f"({len(before - after) * fake.dim * 4 / 1024:.1f} KB of vectors)",
        f"kept {n_prompts + n_split + 9} cache row(s) in use: {n_prompts} prompt(s) of library versions, "
        f"{n_split} bare descriptor(s) for explain's name vs description split, 9 image(s) of evaluation runs",
    ]

    # explain still shows the split, and embeds no text to do it
    fake.embedded.clear()
    shown = run(home, "explain", data / "tree frog" / "f1.png", "-l", "shapes", "--top", "4")
    assert "name vs description not shown" not in shown.output
    assert shown.stdout.count("name vs description: the class name alone gives") == 4
    assert fake.embedded == []
    # nor does the next eval embed the bare descriptors again (only its controls, which gc removed)
    run(home, "eval", data, "-l", "shapes")
    assert not _bare(LIBRARY) & set(fake.embedded)
    assert fake.embedded  # the controls were embedded again: gc did remove them


def test_gc_cache_without_runs_keeps_only_prompts(tmp_path, fake):
    home = tmp_path / "home"
    (tmp_path / "lib.json").write_text(json.dumps(LIBRARY))
    run(home, "ingest", tmp_path / "lib.json", "-l", "shapes", "-t", "paper")
    done = run(home, "gc", "--cache", "--dry-run")
    assert done.stdout.splitlines()[1] == f"kept {len(_prompts(LIBRARY))} cache row(s) in use: " + (
        f"{len(_prompts(LIBRARY))} prompt(s) of library versions"
    )
