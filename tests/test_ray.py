"""Embedding on a Ray cluster (ingest/cluster.py, ``whyclip ingest --ray``, ``whyclip eval --ray``).

The slow tier runs one local Ray cluster for the whole test session (2 CPUs, a small
object store): ingest and eval through Ray against the local path on the tiny model with
random biases and norms (the stored files and rows, byte for byte), a driver killed
mid-ingest that resumes from the cache, and an actor killed mid-job that Ray restarts with
nothing stored twice. The fast tier checks what needs no cluster: the missing extra, the
options, the pool's sizing and the verdict book.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT
from tests.helpers.cli import invoke
from tests.helpers.fakes import lively_copy

NO_RAY = "Ray is not installed here (pip install 'whyclip[ray]'): the Ray tests need it"


# -- what needs no cluster ---------------------------------------------------------------


def test_ray_without_the_extra_is_one_line_naming_it(tiny_model, tmp_path, monkeypatch):
    library = tmp_path / "lib.json"
    library.write_text(json.dumps({"frog": ["green"]}))
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    done = invoke("ingest", library, "--model", tiny_model, "--ray", home=tmp_path / "home")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "Error: --ray needs Ray, which is not installed: pip install 'whyclip[ray]'"
    ]
    assert not (tmp_path / "home").exists()  # refused before any work


def test_ray_actors_needs_ray(tiny_model, tmp_path):
    library = tmp_path / "lib.json"
    library.write_text(json.dumps({"frog": ["green"]}))
    done = invoke("ingest", library, "--model", tiny_model, "--ray-actors", "2", home=tmp_path / "home")
    assert done.returncode == 2
    assert "--ray-actors sizes the Ray pool: give --ray too" in done.stderr


def test_an_address_nobody_answers_at_is_one_line_within_seconds():
    """Ray itself retries such an address for minutes."""
    import socket

    from whyclip.ingest.cluster import reachable
    from whyclip.store import InputError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(InputError, match=f"cannot connect to the Ray cluster at {address}: Connection refused"):
            reachable(address)
    reachable("auto")  # left to Ray


class _FakeRay:
    def __init__(self, resources):
        self.resources = resources

    def cluster_resources(self):
        return self.resources


@pytest.mark.parametrize(
    ("resources", "actors", "expected"),
    [
        ({"CPU": 2.0}, None, (1, {"num_cpus": 1.8}, 2)),  # this machine: one actor, 90% of the CPUs
        ({"CPU": 16.0}, None, (4, {"num_cpus": 3.6}, 4)),
        ({"CPU": 16.0}, 3, (3, {"num_cpus": 4.8}, 5)),
        ({"CPU": 16.0, "GPU": 2.0}, None, (2, {"num_gpus": 1, "num_cpus": 1.0}, 8)),
        ({"CPU": 1.0, "GPU": 1.0}, None, (1, {"num_gpus": 1, "num_cpus": 0.9}, 1)),
    ],
)
def test_the_pool_is_sized_from_the_cluster(resources, actors, expected):
    from whyclip.ingest.cluster import Cluster, RayOptions

    cluster = Cluster(RayOptions(actors=actors))
    cluster.ray = _FakeRay(resources)
    assert cluster.pool() == expected


def test_more_gpu_actors_than_gpus_is_refused():
    from whyclip.ingest.cluster import Cluster, RayOptions
    from whyclip.store import InputError

    cluster = Cluster(RayOptions(actors=3))
    cluster.ray = _FakeRay({"CPU": 16.0, "GPU": 2.0})
    with pytest.raises(InputError, match="more GPU actors than the cluster's 2 GPUs: use at most 2"):
        cluster.pool()


def test_the_verdict_book_answers_what_it_was_given_and_keeps_what_it_adds():
    from whyclip.ingest.cluster import VerdictBook

    key = {"encoder_id": "e", "modality": "text", "precision": "bf16", "path": "prefix", "rule": "r", "platform": "p"}
    book = VerdictBook({VerdictBook.name(key): (True, 0.9995)})
    assert book.get(dict(reversed(list(key.items())))) == (True, 0.9995)  # field order does not matter
    other = {**key, "platform": "cuda H100"}
    assert book.get(other) is None
    book.put(other, False, 0.98)
    assert book.get(other) == (False, 0.98)
    assert book.added == [(other, False, 0.98)]


# -- on a local Ray cluster (slow) ---------------------------------------------------------


@pytest.fixture(scope="session")
def ray_cluster():
    """One local cluster for the session; returns its address for fresh processes."""
    ray = pytest.importorskip("ray", reason=NO_RAY)
    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            object_store_memory=256 * 2**20,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def lively(tiny_model, tmp_path_factory):
    return lively_copy(tiny_model, tmp_path_factory.mktemp("lively") / "tiny", seed=23)


def _library(folder: Path, n_classes: int = 60) -> Path:
    """Classes sharing descriptors and prefixes, as real libraries do."""
    shared = ["green", "has wings", "a long tail", "found near water", "striped fur"]
    lib = {
        f"class {i}": [f"feature {j} of the class {i}" for j in range(i % 7 + 1)] + shared[: i % 5]
        for i in range(n_classes)
    }
    lib["class 0"] = []  # a class with no descriptors: its baseline prompt
    path = folder / "lib.json"
    path.write_text(json.dumps(lib))
    return path


def _index_files(home: Path) -> dict[str, bytes]:
    """Every file of the library's one version (its folder is named by a random key)."""
    (folder,) = (home / "indexes").glob("*/*")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "manifest.json"}


def _all_index_files(home: Path) -> dict[str, dict[str, bytes]]:
    """Every version's files, by library name (the folders are named by random keys)."""
    db = sqlite3.connect(home / "whyclip.db")
    keys = dict(db.execute("select name, index_key from libraries").fetchall())
    db.close()
    out = {}
    for name, key in keys.items():
        (folder,) = (home / "indexes").glob(f"*/{key}")
        out[name] = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "manifest.json"}
    return out


def _rows(home: Path) -> dict[str, list]:
    """What the database holds of the library, without the columns that are the moment or
    the random key of the writing."""
    db = sqlite3.connect(home / "whyclip.db")
    out = {
        "library": db.execute(
            "select name, version, encoder_id, n_classes, n_descriptors, n_prompts, template from libraries"
        ).fetchall(),
        "classes": db.execute("select position, name, n_descriptors, baseline_prompt from classes").fetchall(),
        "descriptors": db.execute("select * from descriptors order by id").fetchall(),
        "cache": db.execute("select encoder_key, text_sha256, vector, norm from embeddings order by 2").fetchall(),
    }
    db.close()
    return out


def _ingest(home: Path, library: Path, model: Path, *extra: str):
    done = invoke("ingest", library, "--model", model, "--precision", "fp32", "--commit-every", "16", *extra, home=home)
    assert done.returncode == 0, done.output
    return done


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_ingest_on_ray_stores_what_the_local_path_stores(ray_cluster, lively, tmp_path, precision):
    library = _library(tmp_path)
    args = ("--precision", precision)
    local = invoke("ingest", library, "--model", lively, "--commit-every", "16", *args, home=tmp_path / "local")
    remote = invoke("ingest", library, "--model", lively, "--commit-every", "16", *args, "--ray", home=tmp_path / "ray")
    assert local.returncode == 0, local.output
    assert remote.returncode == 0, remote.output
    assert "on Ray" in remote.stdout
    assert "0 from the cache" in remote.stdout
    assert _index_files(tmp_path / "ray") == _index_files(tmp_path / "local")
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")
    # the same precision verdicts were reached and saved by the driver
    verdicts = "select encoder_id, modality, precision, path, passed from precision_verdicts"
    got = sqlite3.connect(tmp_path / "ray" / "whyclip.db").execute(verdicts).fetchall()
    want = sqlite3.connect(tmp_path / "local" / "whyclip.db").execute(verdicts).fetchall()
    assert got
    assert got == want


@pytest.mark.slow
def test_several_files_share_one_stream_and_store_what_file_after_file_stores(ray_cluster, lively, tmp_path):
    """Three files, the second and third sharing classes and prompts with the first: the
    local run embeds a shared prompt for the first and finds it for the others, and so
    must the one stream of chunks on Ray; each library is published in order."""
    base = json.loads(_library(tmp_path).read_text())
    names = list(base)
    files = []
    for k, part in enumerate((names[:30], names[20:50], names[10:60])):
        path = tmp_path / f"part{k}.json"
        path.write_text(json.dumps({c: base[c] + [f"only in file {k}"] for c in part}))
        files.append(path)
    local = _ingest(tmp_path / "local", *files[:1], lively, *files[1:])
    remote = _ingest(tmp_path / "ray", *files[:1], lively, *files[1:], "--ray")
    said = [line.split(" in ")[0] for line in local.stdout.splitlines() if line.startswith("library ")]
    assert said == [line.split(" in ")[0] for line in remote.stdout.splitlines() if line.startswith("library ")]
    assert [s.split(":")[0] for s in said] == ["library part0 v1", "library part1 v1", "library part2 v1"]
    assert "from the cache" in said[1]
    assert " 0 from the cache" not in said[1]  # the second file found the first file's prompts
    assert _all_index_files(tmp_path / "ray") == _all_index_files(tmp_path / "local")
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")


@pytest.mark.slow
def test_a_second_ray_ingest_sends_nothing_out(ray_cluster, lively, tmp_path):
    library = _library(tmp_path)
    _ingest(tmp_path / "home", library, lively, "--ray")
    again = _ingest(tmp_path / "home", library, lively, "--ray")
    n = len(_rows(tmp_path / "home")["cache"])
    assert f"({0} embedded, {n} from the cache)" in again.stdout
    assert "v2" in again.stdout


def _dataset(folder: Path) -> Path:
    rng = np.random.default_rng(5)
    for c in ("class 1", "class 2", "class 3"):
        (folder / "ds" / c).mkdir(parents=True)
        for k in range(23):  # 69 images: three chunks of 32, the last one short
            pixels = rng.integers(0, 255, (30 + k, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / "ds" / c / f"{k}.png")
    (folder / "ds" / "class 2" / "broken.jpg").write_bytes(b"not an image")
    return folder / "ds"


@pytest.mark.slow
def test_eval_on_ray_stores_what_the_local_path_stores(ray_cluster, lively, tmp_path):
    from whyclip.store import Store, load_run
    from whyclip.store.db.runs import find_run

    library, dataset = _library(tmp_path), _dataset(tmp_path)
    runs = {}
    for where, extra in (("local", ()), ("ray", ("--ray",))):
        home = tmp_path / where
        _ingest(home, library, lively)
        done = invoke("eval", dataset, "--library", "lib", "--precision", "fp32", "--json", *extra, home=home)
        assert done.returncode == 1, done.output  # the run is stored; exit 1 says an image was skipped
        summary = json.loads(done.stdout)
        store = Store.open(home, create=False)
        runs[where] = (summary, load_run(store.engine, find_run(store.engine, "lib", summary["run"]["name"])))
    (s_local, local), (s_ray, remote) = runs["local"], runs["ray"]
    assert s_ray["embedded"] == s_local["embedded"] == 69
    assert remote.paths == local.paths
    assert np.array_equal(remote.vectors, local.vectors)  # bit for bit
    assert np.array_equal(remote.labels, local.labels)
    assert s_ray["accuracy"] == s_local["accuracy"]
    assert remote.info.details["skipped"] == local.info.details["skipped"]
    assert [line.split(":")[0] for line in remote.info.details["skipped"]] == [str(dataset / "class 2" / "broken.jpg")]


@pytest.mark.slow
def test_an_actor_killed_mid_job_is_restarted_and_nothing_is_stored_twice(ray_cluster, lively, tmp_path):
    """The kill comes from the driver's own progress callback after the second chunk is
    saved, while the other chunks are still queued: Ray restarts the actor and retries."""
    import ray

    from whyclip.ingest.cluster import ClusterEncoder
    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.ingest.services.library_ingest import plan_ingest, run_ingest
    from whyclip.store import Store

    library = _library(tmp_path, n_classes=120)
    _ingest(tmp_path / "local", library, lively)
    store = Store.open(tmp_path / "ray")
    encoder = load_encoder(str(lively), precision="fp32")
    plan = plan_ingest(library, "lib", encoder)
    calls, killed = [], []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3 and not killed:  # the reuse report, then two chunks saved
            workers = [a for a in _actors() if "MapWorker" in a["ActorClassName"] and a["State"] == "ALIVE"]
            os.kill(workers[0]["Pid"], signal.SIGKILL)
            killed.append(workers[0]["ActorID"])

    with ClusterEncoder(encoder) as remote:
        report = run_ingest(store, plan, remote, progress=progress, commit_every=16)
    assert killed, "no actor was killed"
    assert remote.chunks_embedded == len(calls) - 1  # each chunk taken once (the first call: the reuse report)
    assert remote.actor_seconds > 0
    assert f"Ray: {remote.chunks_embedded} chunks (" in remote.describe_work()
    assert len(calls) - 3 >= 3, "the job ended before the kill: no evidence of a retry"
    (restarted,) = [a for a in _actors() if a["ActorID"] == killed[0]]
    assert restarted["NumRestarts"] >= 1
    assert report.n_embedded == len(plan.prompts)
    assert calls[-1] == len(plan.prompts)
    assert _index_files(tmp_path / "ray") == _index_files(tmp_path / "local")
    assert _rows(tmp_path / "ray")["cache"] == _rows(tmp_path / "local")["cache"]  # each prompt once
    assert ray.is_initialized()  # a run on a cluster it did not start leaves it running


@pytest.mark.slow
def test_workers_that_cannot_load_the_model_stop_the_run_in_one_line(ray_cluster, lively, tmp_path):
    from whyclip.ingest.cluster import ClusterEncoder
    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.ingest.services.library_ingest import plan_ingest, run_ingest
    from whyclip.store import ModelLoadError, Store

    store = Store.open(tmp_path / "home")
    encoder = load_encoder(str(lively), precision="fp32")
    plan = plan_ingest(_library(tmp_path), "lib", encoder)
    encoder.model_spec = str(tmp_path / "not-on-the-workers")  # the folder the actors are sent to
    with ClusterEncoder(encoder) as remote, pytest.raises(ModelLoadError) as caught:
        run_ingest(store, plan, remote)
    message = str(caught.value)
    assert message.startswith("the Ray probe actor could not load or check the model: model folder ")
    assert "not-on-the-workers" in message
    assert "\n" not in message
    assert store.libraries() == []


def _actors() -> list[dict]:
    """The cluster's actors as its control store lists them (the state API would need Ray's
    dashboard, which the test cluster does not start)."""
    import ray

    return list(ray._private.state.actors().values())


def _cached(home: Path) -> int:
    try:
        db = sqlite3.connect(home / "whyclip.db", timeout=1)
        try:
            return int(db.execute("select count(*) from embeddings").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_a_killed_driver_leaves_nothing_half_visible_and_its_rerun_resumes(ray_cluster, lively, tmp_path):
    library = _library(tmp_path, n_classes=400)
    home = tmp_path / "ray"
    _ingest(tmp_path / "local", library, lively)
    total = len(_rows(tmp_path / "local")["cache"])
    env = {**os.environ, "WHYCLIP_HOME": str(home)}
    args = [sys.executable, "-m", "whyclip.ui.cli.main", "ingest", str(library), "--model", str(lively)]
    args += ["--precision", "fp32", "--commit-every", "16", "--ray", ray_cluster]
    driver = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while _cached(home) < 40 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    _, err = driver.communicate(timeout=60)
    partial = _cached(home)
    assert 40 <= partial < total, (partial, total, err.decode()[-2000:])
    # nothing half-visible: no version, no index files
    db = sqlite3.connect(home / "whyclip.db")
    assert db.execute("select count(*) from libraries").fetchone()[0] == 0
    db.close()
    assert not list((home / "indexes").glob("*/*")) if (home / "indexes").exists() else True
    rerun = _ingest(home, library, lively, "--ray")
    assert f"({total - partial} embedded, {partial} from the cache)" in rerun.stdout
    assert _index_files(home) == _index_files(tmp_path / "local")
    assert _rows(home) == _rows(tmp_path / "local")


@pytest.mark.slow
def test_the_python_api_ingests_and_evaluates_on_ray_as_locally(ray_cluster, lively, tmp_path):
    import whyclip

    library, dataset = _library(tmp_path), _dataset(tmp_path)
    reports = {}
    for where, ray in (("local", None), ("ray", whyclip.RayOptions(address=ray_cluster, actors=2))):
        with whyclip.open(home=tmp_path / where, precision="fp32") as wc:
            ingested = wc.ingest(library, "lib", model=str(lively), ray=ray)
            evaluated = wc.eval(dataset, "lib", ray=ray)
            reports[where] = (ingested, evaluated)
    (ingest_local, eval_local), (ingest_ray, eval_ray) = reports["local"], reports["ray"]
    assert ingest_ray.n_embedded == ingest_local.n_embedded > 0
    # Two actors on two CPUs run one torch thread each where the local process runs two: a
    # matrix product's sums then split differently, so the vectors agree to float rounding
    # (bit for bit where the threads match, as in the tests above).
    ours = {name: np.load(io.BytesIO(data)) for name, data in _index_files(tmp_path / "ray").items()}
    theirs = {name: np.load(io.BytesIO(data)) for name, data in _index_files(tmp_path / "local").items()}
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=0, atol=2e-6, err_msg=name)
    np.testing.assert_allclose(eval_ray.data.vectors, eval_local.data.vectors, rtol=0, atol=2e-6)
    assert eval_ray.skipped == eval_local.skipped


@pytest.mark.slow
def test_a_plain_embed_texts_call_goes_to_the_cluster_too(ray_cluster, lively):
    """A caller without chunks (embed_prompts, say) gets the cluster's vectors in its own
    order, duplicates included, equal to the local encoder's for the same batch."""
    from whyclip.ingest.cluster import ClusterEncoder
    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.store import InputError

    texts = ["a green frog", "a red bird", "a green frog", "striped fur", "a red bird which has wings"]
    local = load_encoder(str(lively), precision="fp32")
    want_v, want_n = local.embed_texts(list(dict.fromkeys(texts)))
    with ClusterEncoder(load_encoder(str(lively), precision="fp32")) as remote:
        got_v, got_n = remote.embed_texts(texts)
        assert remote.chunks_embedded == 1
    order = [list(dict.fromkeys(texts)).index(t) for t in texts]
    assert np.array_equal(got_v, want_v[order])
    assert np.array_equal(got_n, want_n[order])
    with ClusterEncoder(local, modalities=("image",)) as remote, pytest.raises(InputError, match="from their files"):
        remote.embed_images([Image.new("RGB", (8, 8))])
