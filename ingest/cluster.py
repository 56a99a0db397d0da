"""Embedding on a Ray cluster (``whyclip ingest --ray``, ``whyclip eval --ray``).

Only the embedding leaves the calling process (the driver). The driver reads and checks
the library or dataset, looks every prompt up in the store's embedding cache (and hashes
every image), sends out only what the cache lacks, and saves each chunk of vectors to the
cache as it comes back, then publishes through the store as a local run does. The chunks
are the local path's (the sorted missing prompts, ``commit_every`` at a time), embedded by
the same :class:`~whyclip.ingest.encoder.clip_encoder.ClipEncoder` code inside Ray Data
actors (``map_batches`` with a callable class on a fixed actor pool), so the vectors are
the local path's, and the order in which chunks come back changes nothing stored.

Precision is settled once for the whole run: one probe actor, on the resources an encoder
actor gets, runs the encoder's precision check (the store's verdicts seed it) and every
actor replays that verdict instead of checking again. Each chunk comes back with the cache
key and encoder id of the actor that made it; a chunk under another key (a worker on other
hardware whose check fell back, or other weights at the model's path) stops the run
before it is saved.

Resumable as the local path is: a chunk is in the cache once saved, and a library version
is published only at the end, so a killed driver leaves nothing half-visible and its rerun
sends out only what is still missing. Ray Data restarts a lost actor and retries its
chunk; the cache is keyed by prompt text (image sha256) and saves each key once, so a
retried chunk duplicates nothing.

Images are read by the actors themselves from the paths the driver hashed (on one machine,
or a shared file system on a cluster); an image whose bytes changed since the driver read
them is skipped, like an unreadable one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whyclip.store import InputError, ModelLoadError, WhyclipError

log = logging.getLogger(__name__)

EXTRA = "pip install 'whyclip[ray]'"
CPU_THREADS_PER_ACTOR = 4  # default pool on a CPU cluster: one actor per this many CPUs
CPU_SHARE = 0.9  # of its CPUs an actor asks Ray for: Ray Data's own tasks always find a CPU


def import_ray():
    """Ray, or one line naming the extra that installs it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError(f"--ray needs Ray, which is not installed: {EXTRA}") from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: ``address`` is any Ray cluster (``auto``, ``ray://host:10001``,
    a GCS address); None starts a local cluster for the run (and stops it after), unless
    this process is already connected to one. ``actors``: the encoder pool's size (default:
    one per GPU, else one per four CPUs). ``object_store_memory``: a local cluster's
    object store, in bytes (default: Ray's)."""

    address: str | None = None
    actors: int | None = None
    object_store_memory: int | None = None


@dataclass(frozen=True)
class ActorSpec:
    """What each encoder actor loads: the model as the driver named it (a folder by its
    absolute path), the precision asked for, and the verdicts it replays."""

    model: str
    precision: str
    share_prefixes: bool
    batch_size: int
    threads: int
    verdicts: dict[str, tuple[bool, float]] = field(default_factory=dict)


class VerdictBook:
    """Precision verdicts in memory (the encoder's ``verdicts``: ``get``/``put``), for an
    actor that has no store: seeded from the driver's, and what it adds is sent back."""

    def __init__(self, known: dict[str, tuple[bool, float]] | None = None) -> None:
        self.known = dict(known or {})
        self.added: list[tuple[dict[str, str], bool, float]] = []

    @staticmethod
    def name(key: dict[str, str]) -> str:
        return json.dumps(key, sort_keys=True)

    def get(self, key: dict[str, str]) -> tuple[bool, float] | None:
        return self.known.get(self.name(key))

    def put(self, key: dict[str, str], passed: bool, cosine: float) -> None:
        self.known[self.name(key)] = (bool(passed), float(cosine))
        self.added.append((dict(key), bool(passed), float(cosine)))


class _Lines(logging.Handler):
    """The log records of a probe, sent back so the driver logs them where a user sees them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage()))


def _pack(vectors: np.ndarray, norms: np.ndarray) -> tuple[bytes, bytes]:
    return np.ascontiguousarray(vectors, dtype="<f4").tobytes(), np.ascontiguousarray(norms, dtype="<f4").tobytes()


def _unpack(vectors: bytes, norms: bytes, dim: int) -> tuple[np.ndarray, np.ndarray]:
    return np.frombuffer(vectors, dtype="<f4").reshape(-1, dim), np.frombuffer(norms, dtype="<f4")


class EncoderActor:
    """The encoder on a Ray worker: ``map_batches`` runs it as an actor (one model per
    actor, loaded once), and the probe calls :meth:`settle` directly."""

    def __init__(self, spec: ActorSpec) -> None:
        import torch

        from whyclip.ingest.encoder.clip_encoder import load_encoder

        if not torch.cuda.is_available():
            torch.set_num_threads(spec.threads)
        self.book = VerdictBook(spec.verdicts)
        self.encoder = load_encoder(
            spec.model, precision=spec.precision, share_prefixes=spec.share_prefixes, verdicts=self.book
        )
        self.encoder.batch_size = spec.batch_size

    def _stamp(self, modality: str) -> dict[str, Any]:
        key = self.encoder.cache_key if modality == "text" else self.encoder.image_cache_key
        return {"key": key, "encoder": self.encoder.id, "dim": self.encoder.dim}

    def settle(self, modality: str, sample: list) -> dict[str, Any]:
        """Run the precision check of ``modality`` on ``sample`` (texts, or image paths):
        the settled precision, the verdicts computed, the log lines, the keys."""
        lines = _Lines()
        logging.getLogger("whyclip").addHandler(lines)
        try:
            if modality == "image":
                pictures = [p for p in (_read_picture(path, None)[0] for path in sample) if p is not None]
                sample = self.encoder.prepare_images(pictures) if pictures else []
            self.encoder.check_precision(modality, sample)
        finally:
            logging.getLogger("whyclip").removeHandler(lines)
        return {
            "precision": self.encoder.precisions[modality],
            "verdicts": self.book.added,
            "log": lines.records,
            "platform_device": self.encoder.device,
            **self._stamp(modality),
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"id": [], "vectors": [], "norms": [], "done": [], "errors": [], "key": []}
        out.update({"encoder": [], "seconds": []})
        for chunk_id, kind, payload in zip(batch["id"], batch["kind"], batch["payload"], strict=True):
            started = time.perf_counter()
            items = json.loads(payload)
            errors: list[tuple[int, str]] = []
            if kind == "text":
                vectors, norms = self.encoder.embed_texts(items)
                done = list(range(len(items)))
            else:
                vectors, norms, done, errors = self._images(items)
            packed = _pack(vectors, norms)
            stamp = self._stamp(str(kind))
            out["id"].append(int(chunk_id))
            out["vectors"].append(packed[0])
            out["norms"].append(packed[1])
            out["done"].append(json.dumps(done))
            out["errors"].append(json.dumps(errors))
            out["key"].append(stamp["key"])
            out["encoder"].append(stamp["encoder"])
            out["seconds"].append(time.perf_counter() - started)
        return out

    def _images(self, items: list) -> tuple[np.ndarray, np.ndarray, list[int], list[tuple[int, str]]]:
        """Read, check against the driver's sha256, decode and embed one chunk of images."""
        pictures, done = [], []
        errors: list[tuple[int, str]] = []
        for position, (path, sha) in enumerate(items):
            picture, error = _read_picture(path, sha)
            if picture is None:
                errors.append((position, error))
            else:
                pictures.append(picture)
                done.append(position)
        if not pictures:
            dim = self.encoder.dim
            return np.zeros((0, dim), np.float32), np.zeros(0, np.float32), done, errors
        vectors, norms = self.encoder.embed_images(self.encoder.prepare_images(pictures))
        return vectors, norms, done, errors


def _read_picture(path: str, sha: str | None):
    """(picture, None) or (None, "path: reason"): the image at ``path``, its bytes checked
    against ``sha`` (the driver's hash) when given."""
    from whyclip.ingest.images import read_image_bytes

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, f"{path}: cannot be read on the Ray worker ({exc.strerror or exc})"
    if sha is not None and hashlib.sha256(data).hexdigest() != sha:
        return None, f"{path}: changed since it was read (its bytes differ on the Ray worker)"
    try:
        return read_image_bytes(path, data), None
    except WhyclipError as exc:
        return None, str(exc)


def _actor_model(local) -> str:
    """The model as every actor loads it: a folder by its absolute path (an actor's working
    directory is not the driver's), a hub name as given."""
    from whyclip.ingest.encoder.loading import looks_like_path

    spec = str(local.model_spec)
    if looks_like_path(spec):
        return str(Path(spec).expanduser().resolve())
    return spec


class Cluster:
    """A connection to a Ray cluster for one run, made on first use. :meth:`close` ends
    what this run began: it stops a local cluster it started and disconnects from a
    cluster it joined; a connection this process already had stays open."""

    def __init__(self, options: RayOptions) -> None:
        self.options = options
        self.ray: Any = None
        self.connected = False
        self.seconds: dict[str, float] = {}

    def connect(self):
        if self.ray is not None:
            return self.ray
        ray = import_ray()
        t = time.perf_counter()
        if not ray.is_initialized():
            if self.options.address is not None:
                reachable(self.options.address)
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if self.options.address is None:
                kwargs["num_cpus"] = os.cpu_count() or 1
                if self.options.object_store_memory:
                    kwargs["object_store_memory"] = self.options.object_store_memory
            try:
                ray.init(address=self.options.address, **kwargs)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, ImportError...
                where = self.options.address or "a local cluster"
                raise InputError(f"cannot connect to the Ray cluster at {where}: {_first_line(exc)}") from None
            self.connected = True
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # whyclip shows its own progress
        context.print_on_execution_start = False
        logging.getLogger("ray").setLevel(logging.WARNING)
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its notes on progress bars and execution plans
        self.seconds["connect"] = time.perf_counter() - t
        self.ray = ray
        return ray

    def pool(self) -> tuple[int, dict[str, float], int]:
        """(actors, each actor's Ray resources, each actor's torch threads)."""
        ray = self.connect()
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 1))
        actors = self.options.actors
        if gpus:
            actors = actors or gpus
            if actors > gpus:
                raise InputError(
                    f"--ray-actors {actors} asks for more GPU actors than the cluster's {gpus} GPUs: use at most {gpus}"
                )
            share = max(1.0, cpus / actors)
            return actors, {"num_gpus": 1, "num_cpus": min(1.0, CPU_SHARE * share)}, max(1, int(share))
        actors = actors or max(1, int(cpus // CPU_THREADS_PER_ACTOR))
        share = cpus / actors
        return actors, {"num_cpus": round(CPU_SHARE * share, 3)}, max(1, math.floor(share))

    def close(self) -> None:
        if self.ray is not None and self.connected:
            self.ray.shutdown()
        self.ray, self.connected = None, False


CONNECT_TIMEOUT_S = 5.0


def reachable(address: str) -> None:
    """A ``host:port`` or ``ray://host:port`` address must accept a connection within
    ``CONNECT_TIMEOUT_S``: Ray itself keeps retrying an address nobody answers at for
    minutes. ``auto`` and other forms are left to Ray."""
    import socket

    where = address.removeprefix("ray://")
    host, sep, port = where.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(
            f"cannot connect to the Ray cluster at {address}: {reason}; check the address (ray status on the "
            "cluster's head shows it), or give --ray alone for a local cluster"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class ClusterEncoder:
    """The driver's encoder with the embedding of ``modalities`` sent to a Ray cluster:
    everything else (identity, token counts, the other modality) is the local encoder's.

    Use it where the local encoder goes (``run_ingest``, ``run_eval``) and close it after
    (or use it as a context manager)."""

    def __init__(
        self, local, options: RayOptions | None = None, modalities: Sequence[str] = ("text",), cluster=None
    ) -> None:
        self.local = local
        self.modalities = set(modalities)
        self.cluster = cluster or Cluster(options or RayOptions())
        self.precisions = dict(local.precisions)  # the remote modalities' settle on the probe
        self.settled: dict[str, dict[str, Any]] = {}
        self.chunks_embedded = 0
        self.actor_seconds = 0.0  # the actors' own time on the chunks taken (their "seconds")

    def __getattr__(self, name: str):
        return getattr(self.local, name)

    def __enter__(self) -> ClusterEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.cluster.close()

    # -- identity: the local encoder's, with the remote modalities' settled precision --

    @property
    def info(self):
        return self.local.info

    @property
    def max_tokens(self) -> int:
        return int(self.local.max_tokens)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self.local.count_tokens(texts)

    @property
    def cache_key(self) -> str:
        if "text" not in self.modalities:
            return self.local.cache_key
        return f"{self.local.id}/{self.precisions['text']}"

    @property
    def image_cache_key(self) -> str:
        if "image" not in self.modalities:
            return self.local.image_cache_key
        from whyclip.ingest.images import PIXEL_RULES

        return f"{self.local.id}/{self.precisions['image']}/image/{PIXEL_RULES}"

    @property
    def precision(self) -> str:
        t, i = self.precisions["text"], self.precisions["image"]
        return t if t == i else f"text {t}, images {i}"

    def _spec(self) -> ActorSpec:
        _, _, threads = self.cluster.pool()
        known: dict[str, tuple[bool, float]] = {}
        listed = getattr(getattr(self.local, "verdicts", None), "all", None)
        for row in listed() if listed is not None else []:
            if row["encoder_id"] == self.local.id:
                key = {f: row[f] for f in ("encoder_id", "modality", "precision", "path", "rule", "platform")}
                known[VerdictBook.name(key)] = (bool(row["passed"]), float(row["cosine"]))
        for settled in self.settled.values():
            for key, passed, cosine in settled["verdicts"]:
                known[VerdictBook.name(key)] = (passed, cosine)
        return ActorSpec(
            model=_actor_model(self.local),
            precision=getattr(self.local, "requested_precision", "auto"),
            share_prefixes=bool(getattr(self.local, "share_prefixes", True)),
            batch_size=int(getattr(self.local, "batch_size", 64)),
            threads=threads,
            verdicts=known,
        )

    def check_precision(self, modality: str, sample: list) -> None:
        """The remote modality's precision check, once, on a probe actor: its verdict is
        saved to the driver's verdicts and replayed by every encoder actor."""
        if modality not in self.modalities:
            self.local.check_precision(modality, sample)
            return
        if modality in self.settled or len(sample) == 0:
            return
        ray = self.cluster.connect()
        _, resources, _ = self.cluster.pool()
        t = time.perf_counter()
        probe = ray.remote(EncoderActor).options(**resources).remote(self._spec())
        try:
            result = ray.get(probe.settle.remote(modality, list(sample)))
        except Exception as exc:  # the actor's own error, wrapped by Ray
            raise ModelLoadError(f"the Ray probe actor could not load or check the model: {_cause(exc)}") from None
        finally:
            ray.kill(probe)
        self.cluster.seconds["probe"] = time.perf_counter() - t
        self._check_identity(result)
        for level, line in result["log"]:
            log.log(level, "on the Ray workers (%s): %s", result["platform_device"], line)
        verdicts = getattr(self.local, "verdicts", None)
        for key, passed, cosine in result["verdicts"]:
            if verdicts is not None:
                verdicts.put(key, passed, cosine)
        self.precisions[modality] = result["precision"]
        self.settled[modality] = result

    def _check_identity(self, result: dict[str, Any]) -> None:
        if result["encoder"] != self.local.id:
            raise ModelLoadError(
                f"the Ray workers loaded other weights than this process ({result['encoder']} instead of "
                f"{self.local.id}): the model folder must hold the same files at the same path on every node"
            )

    # -- embedding ---------------------------------------------------------------------

    def _run(self, kind: str, payloads: list[str]) -> Iterator[dict[str, Any]]:
        """Each chunk's row, as the actors finish them (in any order)."""
        if not payloads:
            return
        ray = self.cluster.connect()
        actors, resources, _ = self.cluster.pool()
        items = [{"id": i, "kind": kind, "payload": p} for i, p in enumerate(payloads)]
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            EncoderActor,
            fn_constructor_args=(self._spec(),),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(actors, len(items))),
            **resources,
        )
        expected = self.cache_key if kind == "text" else self.image_cache_key
        seen: set[int] = set()
        try:
            for row in dataset.iter_rows():
                if row["encoder"] != self.local.id:
                    self._check_identity({"encoder": row["encoder"]})
                if row["key"] != expected:
                    raise ModelLoadError(
                        f"a Ray worker made {kind} vectors under {row['key']} where this run settled on {expected} "
                        "(its hardware checks the precision differently): rerun with --precision fp32"
                    )
                if int(row["id"]) in seen:  # a retried chunk delivered twice: its vectors are the same
                    continue
                seen.add(int(row["id"]))
                self.chunks_embedded += 1
                self.actor_seconds += float(row["seconds"])
                yield row
        except WhyclipError:
            raise
        except Exception as exc:  # a failed actor or task, after Ray's own retries
            raise ModelLoadError(f"the Ray job failed: {_cause(exc)}") from None

    def embed_text_chunks(self, chunks: list[list[str]]) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
        """(texts, unit vectors, norms) per chunk, as each comes back."""
        if chunks:
            self.check_precision("text", _spread(chunks))
        for row in self._run("text", [json.dumps(c) for c in chunks]):
            vectors, norms = _unpack(row["vectors"], row["norms"], self.local.dim)
            yield chunks[int(row["id"])], vectors, norms

    def embed_texts(self, texts: Sequence[str], progress: Callable[[int], None] | None = None):
        """Unit vectors and norms of ``texts``, in their order (the encoder's own call, for
        a caller that embeds without chunks): on the cluster, each distinct text once."""
        if "text" not in self.modalities:
            return self.local.embed_texts(texts, progress)
        distinct = list(dict.fromkeys(texts))
        at = {t: i for i, t in enumerate(distinct)}
        vectors = np.zeros((len(distinct), self.local.dim), np.float32)
        norms = np.zeros(len(distinct), np.float32)
        for chunk, v, n in self.embed_text_chunks([distinct[s : s + 1024] for s in range(0, len(distinct), 1024)]):
            rows = [at[t] for t in chunk]
            vectors[rows], norms[rows] = v, n
            if progress:
                progress(len(chunk))
        index = [at[t] for t in texts]
        return vectors[index], norms[index]

    def embed_images(self, images, progress: Callable[[int], None] | None = None):
        """The local encoder's, unless images go to the cluster: those are sent as files
        (:func:`whyclip.ingest.embedding.embed_image_files_cached`), never as pictures, so
        that no image vector is made here under the cluster's cache key."""
        if "image" in self.modalities:
            raise InputError("on a Ray cluster images are embedded from their files: use embed_image_files_cached")
        return self.local.embed_images(images, progress)

    def embed_image_chunks(
        self, chunks: list[list[tuple[str, str]]]
    ) -> Iterator[tuple[int, list[int], np.ndarray, np.ndarray, list[tuple[int, str]]]]:
        """(chunk number, positions embedded, their vectors, norms, (position, "path: reason")
        per image not embedded) per chunk of (path, sha256), as each comes back."""
        for row in self._run("image", [json.dumps(c) for c in chunks]):
            vectors, norms = _unpack(row["vectors"], row["norms"], self.local.dim)
            errors = [(int(p), str(m)) for p, m in json.loads(row["errors"])]
            yield int(row["id"]), json.loads(row["done"]), vectors, norms, errors

    def describe_work(self) -> str:
        parts = [f"{k} {v:.1f}s" for k, v in self.cluster.seconds.items()]
        parts.append(f"actors embedding {self.actor_seconds:.1f}s")
        return f"Ray: {self.chunks_embedded} chunks ({', '.join(parts)})"


@contextmanager
def on_ray(encoder, ray: RayOptions | str | bool | None, modality: str) -> Iterator:
    """``encoder`` with its ``modality`` embedding sent to the Ray cluster ``ray`` names
    (True: a local cluster for the call, or the one this process is connected to; an
    address; or :class:`RayOptions`), disconnected at the end; ``encoder`` itself for None
    or False."""
    if ray is None or ray is False:
        yield encoder
        return
    options = ray if isinstance(ray, RayOptions) else RayOptions(address=None if ray is True else str(ray))
    with ClusterEncoder(encoder, options, modalities=(modality,)) as remote:
        yield remote


def _spread(chunks: list[list[str]]) -> list[str]:
    """The precision check's sample: up to 16 prompts spread over the run."""
    flat = [t for c in chunks for t in c]
    picks = np.linspace(0, len(flat) - 1, min(16, len(flat))).astype(int)
    return [flat[i] for i in picks]


def _cause(exc: BaseException) -> str:
    """The first line of the error that started a Ray failure (Ray wraps a worker's own
    exception, its traceback included, in its message), without the exception's class."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and str(cause).strip():
        return _first_line(cause)
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    for line in reversed(lines):
        if ":" in line and not line.startswith(("File ", "Traceback")):
            return re.sub(r"^[\w.]+(Error|Exception): ", "", line)
    return lines[0] if lines else type(exc).__name__
