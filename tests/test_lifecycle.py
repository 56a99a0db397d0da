"""delete, gc, libraries --all and export, through the command line in process (the fake
encoder), checked against the database and the files."""

from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.helpers.cli import invoke
from tests.helpers.fakes import install_fake, planted_png
from whyclip.store import Store
from whyclip.store.db import embedding_cache
from whyclip.store.db.schema import DescriptorRow, EvalImageRow, EvalRunRow
from whyclip.store.method.templates import Template

CONCEPTS = ["green", "stripes", "wings", "fur"]
A = {"frog": ["green skin", "wide mouth"], "owl": ["wings", "big round eyes"]}
A2 = {"frog": ["green skin", "a long tongue"], "owl": ["wings", "big round eyes"], "mole": []}
B = {"frog": ["green skin"], "cat": ["fur", "whiskers"]}


@pytest.fixture(autouse=True)
def fake(monkeypatch):
    return install_fake(monkeypatch, CONCEPTS)


def run(home, *args, ok=True, db=None):
    extra = ["--db", db] if db else []
    done = invoke(*extra, *args, home=home)
    assert "Traceback" not in done.stderr, done.stderr
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def write(path, content):
    path.write_text(json.dumps(content))
    return str(path)


def prompts_of(content: dict) -> set[str]:
    tmpl = Template("paper")
    return {tmpl.build(c, d) for c, ds in content.items() for d in ds} | {f"a photo of a {c}." for c in content}


@pytest.fixture
def home(tmp_path, db_url):
    h = tmp_path / "home"
    run(h, "ingest", write(tmp_path / "a.json", A), "-l", "a", db=db_url)
    run(h, "ingest", write(tmp_path / "a2.json", A2), "-l", "a", db=db_url)
    run(h, "ingest", write(tmp_path / "b.json", B), "-l", "b", db=db_url)
    return h


def test_libraries_all_lists_every_version(home, db_url):
    newest = json.loads(run(home, "libraries", "--json", db=db_url).stdout)
    every = json.loads(run(home, "libraries", "--json", "--all", db=db_url).stdout)
    assert [(e["name"], e["version"]) for e in newest] == [("a", 2), ("b", 1)]
    assert [(e["name"], e["version"], e["n_descriptors"]) for e in every] == [("a", 1, 4), ("a", 2, 4), ("b", 1, 3)]
    table = run(home, "libraries", "--all", db=db_url).stdout.splitlines()
    assert [line.split()[:2] for line in table[1:]] == [["a", "1"], ["a", "2"], ["b", "1"]]


def test_delete_a_version_keeps_the_cache_and_never_reuses_its_number(home, tmp_path, db_url):
    store = Store.open(home, db_url)
    v1, v2 = store.library("a", 1), store.library("a", 2)
    cached = embedding_cache.count(store.engine)
    folder = store.index_folder(v1)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    done = run(home, "delete", "a", "--version", "1", "--yes", db=db_url)
    assert done.stdout.strip() == (
        f"deleted library a v1: 1 index folder(s), {size / 1024:.1f} KB freed; cached vectors kept"
    )
    assert not folder.exists()
    assert store.index_folder(v2).is_dir()
    with Session(store.engine) as s:
        assert s.scalar(select(func.count()).where(DescriptorRow.library_id == v1.id)) == 0
    assert [(i.name, i.version) for i in store.libraries(every_version=True)] == [("a", 2), ("b", 1)]
    assert embedding_cache.count(store.engine) == cached
    # deleting the newest version and ingesting again: a new number, new keys, nothing embedded
    top_key = max(i.first_descriptor_id + i.n_descriptors - 1 for i in store.libraries(every_version=True))
    run(home, "delete", "a", "--version", "2", "--yes", db=db_url)
    again = run(home, "ingest", write(tmp_path / "a2.json", A2), "-l", "a", db=db_url)
    assert again.stdout.startswith("library a v3: ")
    assert "(0 embedded, 7 from the cache)" in again.stdout
    assert store.library("a").first_descriptor_id == top_key + 1
    assert [(i.name, i.version) for i in store.libraries(every_version=True)] == [("a", 3), ("b", 1)]
    run(home, "delete", "a", "--yes", db=db_url)
    assert [i.name for i in store.libraries(every_version=True)] == ["b"]


def test_delete_refusals_are_one_line(home, db_url):
    unknown = run(home, "delete", "a", "--version", "9", "--yes", ok=False, db=db_url)
    assert (unknown.returncode, unknown.stderr) == (
        1,
        "Error: no library 'a' version 9 to delete; its versions are 1, 2\n",
    )
    nobody = run(home, "delete", "zzz", "--yes", ok=False, db=db_url)
    assert nobody.stderr == "Error: no library 'zzz' to delete; see 'whyclip libraries'\n"
    unasked = run(home, "delete", "a", ok=False, db=db_url)
    assert unasked.returncode == 2
    assert "pass --yes to delete" in unasked.stderr
    assert len(Store.open(home, db_url).libraries(every_version=True)) == 3


def test_delete_refuses_a_version_with_runs_unless_told(home, tmp_path, db_url):
    data = tmp_path / "data"
    for cls, concept in (("frog", "green"), ("owl", "wings")):
        (data / cls).mkdir(parents=True)
        (data / cls / "1.png").write_bytes(planted_png([concept]))
    run(home, "eval", str(data), "-l", "a", "--name", "check", db=db_url)
    refused = run(home, "delete", "a", "--yes", ok=False, db=db_url)
    assert refused.stderr == (
        "Error: library 'a' has 1 evaluation run(s) ('check'): pass --with-runs to delete them "
        "too, or keep the version\n"
    )
    store = Store.open(home, db_url)
    assert len(store.libraries(every_version=True)) == 3
    done = run(home, "delete", "a", "--yes", "--with-runs", db=db_url)
    assert done.stdout.startswith("deleted library a v1, v2: 2 index folder(s), ")
    assert "1 evaluation run(s) deleted with it" in done.stdout
    with Session(store.engine) as s:
        assert (
            s.scalar(select(func.count()).select_from(EvalRunRow)),
            s.scalar(select(func.count()).select_from(EvalImageRow)),
        ) == (0, 0)


def _age(folder, seconds):
    then = os.path.getmtime(folder) - seconds
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (then, then))


def test_gc_removes_unowned_old_folders_and_unused_cache_rows(home, db_url):
    store = Store.open(home, db_url)
    root = home / "indexes" / store.store_id
    owned = sorted(p.name for p in root.iterdir())
    orphan, stale, young = root / uuid.uuid4().hex, root / (uuid.uuid4().hex + ".tmp"), root / uuid.uuid4().hex
    for folder, n in ((orphan, 1000), (stale, 10), (young, 5)):
        folder.mkdir()
        (folder / "vectors.npy").write_bytes(b"x" * n)
    _age(orphan, 3600)
    _age(stale, 3600)
    dry = run(home, "gc", "--dry-run", "--cache", db=db_url)
    n_used = len(prompts_of(A) | prompts_of(A2) | prompts_of(B))
    assert dry.stdout.splitlines() == [
        "would remove 2 index folder(s) (1010 bytes) and 0 cache row(s) (0 bytes of vectors)",
        f"kept {n_used} cache row(s) in use: {n_used} prompt(s) of library versions",
    ]
    assert "left 1 unowned index folder(s) younger than 15 minutes" in dry.stderr
    assert orphan.is_dir()
    assert stale.is_dir()
    done = run(home, "gc", db=db_url)
    assert done.stdout.strip() == "removed 2 index folder(s) (1010 bytes)"
    assert sorted(p.name for p in root.iterdir()) == sorted([*owned, young.name])
    # cache: deleting b leaves its prompts that no version of a uses
    run(home, "delete", "b", "--yes", db=db_url)
    unused = prompts_of(B) - prompts_of(A) - prompts_of(A2)
    before = embedding_cache.count(store.engine)
    dim = 32
    freed = run(home, "gc", "--cache", db=db_url)
    assert freed.stdout.splitlines()[0] == (
        f"removed 0 index folder(s) (0 bytes) and {len(unused)} cache row(s) ({len(unused) * dim * 4} bytes of vectors)"
    )
    assert len(unused) == 3
    assert embedding_cache.count(store.engine) == before - len(unused) == len(prompts_of(A) | prompts_of(A2))
    left = embedding_cache.lookup(store.engine, "fake-32-v1", sorted(prompts_of(A) | prompts_of(A2) | prompts_of(B)))
    assert set(left) == prompts_of(A) | prompts_of(A2)
    shown = json.loads(run(home, "explain", str(_image(home)), "-l", "a", "--json", db=db_url).stdout)
    assert (shown["library"], shown["classes"][0]["class"]) == ("a", "frog")


def _image(home):
    path = home.parent / "frog.png"
    path.write_bytes(planted_png(["green"]))
    return path


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_export_then_ingest_gives_the_same_prompts_and_vectors(tmp_path, suffix, db_url):
    home = tmp_path / "home"
    content = {"tree frog": ["green, sticky toes", ' "quoted" eyes'], "owl": ["an owl's face"], "mole": []}
    template, baseline = "{class} looks like {descriptor}", "an image of the {class}"
    run(home, "ingest", write(tmp_path / "src.json", content), "-l", "src", "-t", template, "-b", baseline, db=db_url)
    out = tmp_path / f"exported{suffix}"
    done = run(home, "export", "src", "--out", str(out), db=db_url)
    assert done.stdout.strip() == f"wrote library src v1 to {out} (3 classes, 3 descriptors) and {out}.meta.json"
    meta = json.loads((tmp_path / f"exported{suffix}.meta.json").read_text())
    assert (meta["name"], meta["version"], meta["template"], meta["baseline_template"]) == (
        "src",
        1,
        template,
        baseline,
    )
    assert meta["classes"][0] == {
        "name": "tree frog",
        "baseline_prompt": "an image of the tree frog",
        "descriptors": [
            {"text": "green, sticky toes", "prompt": "tree frog looks like green, sticky toes"},
            {"text": ' "quoted" eyes', "prompt": 'tree frog looks like  "quoted" eyes'},
        ],
    }
    again = run(home, "ingest", str(out), "-l", "copy", db=db_url)
    assert f"using template {template!r} and baseline {baseline!r} from {out}.meta.json" in again.stderr
    assert "(0 embedded, 6 from the cache)" in again.stdout  # 3 descriptor and 3 baseline prompts
    store = Store.open(home, db_url)
    src, copy = store.load("src"), store.load("copy")
    assert copy.class_names == src.class_names == list(content)
    texts = [src.class_texts(c) for c in range(3)]
    assert [copy.class_texts(c) for c in range(3)] == texts
    assert [p for ts in texts for _, p in ts] == [p["prompt"] for c in meta["classes"] for p in c["descriptors"]]
    assert copy.baseline_prompts == src.baseline_prompts == [c["baseline_prompt"] for c in meta["classes"]]
    np.testing.assert_array_equal(np.asarray(copy.vectors), np.asarray(src.vectors))
    np.testing.assert_array_equal(np.asarray(copy.matrices.baseline), np.asarray(src.matrices.baseline))
    refused = run(home, "export", "src", "--out", str(out), ok=False, db=db_url)
    assert refused.stderr == f"Error: {out} exists: choose another --out, or pass --force to overwrite it\n"


def test_ingesting_an_export_with_another_template_says_the_prompts_differ(tmp_path):
    home = tmp_path / "home"
    run(home, "ingest", write(tmp_path / "src.json", A), "-l", "src")
    out = tmp_path / "src-export.json"
    run(home, "export", "src", "--out", str(out))
    bare = run(home, "ingest", str(out), "-l", "bare", "--template", "bare")
    assert f"using baseline 'a photo of a {{class}}.' from {out}.meta.json" in bare.stderr
    assert "warning: 4 prompt(s) differ from those the export recorded" in bare.stderr
    assert "(4 embedded, 2 from the cache)" in bare.stdout  # the descriptors bare; the baselines as exported
