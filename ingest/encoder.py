"""The CLIP encoder, through sentence-transformers: the only module importing torch.

A model is a sentence-transformers name (default ``clip-ViT-B-32``, downloaded on first
use where there is internet) or a local folder (a plain transformers CLIP folder, such as
one written by ``whyclip make-test-model``). Texts and images are embedded in batches
sorted by length and padded to the longest in the batch; every call returns unit float32
vectors and each vector's raw norm (the centroid aggregate needs it).

Texts take the prefix-sharing path of :mod:`ingest.textpath` (its sibling, the other module
that imports torch) where the model is transformers' CLIP: each text is tokenized once, and
token prefixes shared by several texts are computed once. It is checked against the plain
sentence-transformers fp32 vectors on a sample, like a lower precision, and falls back.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from whyclip.store import EncoderInfo
from whyclip.store.errors import ModelLoadError

from .fingerprint import ID_VERSION, content_fingerprint, legacy_fingerprint
from .textpath import PrefixTextPath, unsupported_reason

log = logging.getLogger(__name__)

DEFAULT_MODEL = "clip-ViT-B-32"
CLIP_MAX_TOKENS = 77
TEST_MODEL_MARKER = "whyclip_test_model.json"  # written by `whyclip make-test-model`
CHUNK = 1024  # prompts handed to sentence-transformers at once (progress granularity)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CHECK_SAMPLE = 16  # vectors compared with fp32 before a lower precision is trusted
MIN_COSINE = 0.999
PREFIX_MIN_COSINE = 0.9999  # the fp32 prefix path against the plain fp32 path (rounding only)
MAX_CACHED_IDS = 500_000  # token-id sequences remembered between count_tokens and embed_texts

Progress = Callable[[int], None]


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "~", "/")) or os.sep in model or Path(model).exists()


def _unit(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(raw, dtype=np.float32)
    norms = np.linalg.norm(raw, axis=1)
    return raw / np.maximum(norms, 1e-12)[:, None], norms


class ClipEncoder:
    """CLIP text and image towers loaded through sentence-transformers."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str | None = None, batch_size: int = 64,
                 precision: str = "auto", share_prefixes: bool = True):  # fmt: skip
        self.model_spec = model
        self.batch_size = batch_size
        self.seconds: dict[str, float] = {}  # where the time went: load, tokenize, check, embed
        started = time.perf_counter()
        self._st = _load_sentence_transformer(model, device)
        self.seconds["load"] = time.perf_counter() - started
        module = self._st[0]
        self._clip = getattr(module, "auto_model", None) or module.model
        self.tokenizer = getattr(module, "tokenizer", None) or module.processor.tokenizer
        positions = self._clip.config.text_config.max_position_embeddings
        self.max_tokens = int(min(positions, CLIP_MAX_TOKENS))
        self._st.max_seq_length = self.max_tokens  # truncate, never crash, on long prompts
        self.dim = int(self._clip.config.projection_dim)
        self.logit_scale = float(self._clip.logit_scale.exp().item())
        self.name = str(Path(model).expanduser().resolve()) if _looks_like_path(model) else model
        t = time.perf_counter()
        self.id = f"clip-{self.dim}-{ID_VERSION}-{self._fingerprint()}"
        self.seconds["fingerprint"] = time.perf_counter() - t
        self.device = str(self._st.device)
        self.precision = resolve_precision(precision, self.device)
        self._fast = None  # a low-precision copy of the whole model, made on first use (images)
        self._ids: dict[str, tuple[int, ...]] = {}  # text -> token ids, so each text is tokenized once
        self._text = None  # the prefix-sharing text path in use; None: the plain path
        reason = unsupported_reason(self._clip) if share_prefixes else "prefix sharing turned off"
        t = time.perf_counter()
        if reason:
            log.info("texts take the plain path: %s", reason)
        else:
            self._text = PrefixTextPath.from_clip(self._clip, _dtype(self.precision))
        self.seconds["text_copy"] = time.perf_counter() - t
        self.checked: dict[str, float] = {}  # modality -> lowest cosine with fp32 on the check sample
        if self.device == "cpu":
            _quiet_blas()
        if _looks_like_path(model) and (Path(self.name) / TEST_MODEL_MARKER).is_file():
            log.warning("%s is a random-weight test model: fine for plumbing and speed checks, its explanations mean nothing", self.name)

    @property
    def cache_key(self) -> str:
        """Identifies the vectors this encoder makes: weights and numeric precision."""
        return f"{self.id}/{self.precision}"

    @property
    def info(self) -> EncoderInfo:
        return EncoderInfo(id=self.id, name=self.name, dim=self.dim, logit_scale=self.logit_scale)

    def _fingerprint(self) -> str:
        """The content id's hash: architecture and weights, not the path or library versions
        (see :mod:`whyclip.ingest.fingerprint`)."""
        return content_fingerprint(self._clip)

    def legacy_ids(self, names: Sequence[str] = ()) -> set[str]:
        """The ids whyclip gave this model before content ids (path-dependent), had it been
        loaded as any of ``names``, the folder or name as given, or the current load path."""
        current = str(getattr(self._clip.config, "_name_or_path", "") or "")
        spec = self.model_spec
        candidates = {*names, spec, str(Path(spec).expanduser()), self.name, current} - {""}
        return {self.legacy_fingerprint(c) for c in sorted(candidates)}

    def legacy_fingerprint(self, name_or_path: str) -> str:
        """The id whyclip gave this model before content ids, had it been loaded as
        ``name_or_path`` (the old, path-dependent algorithm; for recognising stored ids)."""
        return legacy_fingerprint(self._clip, name_or_path)

    def token_ids(self, texts: Sequence[str]) -> list[tuple[int, ...]]:
        """Token ids per text, start and end tokens included, not truncated. Each text is
        tokenized once: the ids are remembered for :meth:`count_tokens` and the text path."""
        new = [t for t in dict.fromkeys(texts) if t not in self._ids]
        if new:
            started = time.perf_counter()
            if len(self._ids) + len(new) > MAX_CACHED_IDS:
                self._ids.clear()
            ids = self.tokenizer(new, add_special_tokens=True, truncation=False, return_attention_mask=False)["input_ids"]
            self._ids.update(zip(new, map(tuple, ids)))
            self._add_seconds("tokenize", started)
        return [self._ids[t] for t in texts]

    def _add_seconds(self, stage: str, started: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started

    def describe_work(self) -> str:
        """One line on where the time went (``whyclip -v`` logs it after an ingest)."""
        parts = [f"{k} {v:.2f}s" for k, v in self.seconds.items()]
        if self._text is not None:
            st = self._text.stats
            parts.append(f"shared-prefix pass {st.shared_s:.2f}s, suffix pass {st.own_s:.2f}s; tokens computed "
                         f"{st.shared_tokens + st.own_tokens:,} of {st.plain_tokens:,} ({st.shared_tokens:,} in shared prefixes)")  # fmt: skip
        return f"encoder ({self.precision}): " + ", ".join(parts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, start and end tokens included (CLIP's limit is 77)."""
        return [len(x) for x in self.token_ids(list(texts))]

    def _plain_model(self):
        """The sentence-transformers model at this encoder's precision."""
        if self.precision == "fp32":
            return self._st
        if self._fast is None:
            self._fast = copy.deepcopy(self._st).to(_dtype(self.precision))
        return self._fast

    def _encode(self, items: list, batch_size: int, model=None) -> np.ndarray:
        model = model or self._plain_model()
        return model.encode(items, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=False,
                            show_progress_bar=False).astype(np.float32)  # fmt: skip

    def _model_ids(self, texts: list[str]) -> list[tuple[int, ...]]:
        """The ids the plain path gives the model: texts over the limit truncated by the
        tokenizer exactly as sentence-transformers asks it to (the end token kept)."""
        ids = self.token_ids(texts)
        long = [i for i, x in enumerate(ids) if len(x) > self.max_tokens]
        if long:
            cut = self.tokenizer([texts[i] for i in long], add_special_tokens=True, truncation="longest_first",
                                 max_length=self.max_tokens, return_attention_mask=False)["input_ids"]  # fmt: skip
            ids = list(ids)
            for i, x in zip(long, cut):
                ids[i] = tuple(x)
        return ids

    def _embed_prefix(self, texts: list[str], progress: Progress | None = None) -> np.ndarray:
        """Raw projections through the prefix-sharing path: identical token sequences once,
        sequences in sorted order (shared prefixes together) in chunks of ``CHUNK``."""
        rows: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(self._model_ids(texts)):
            rows.setdefault(x, []).append(i)
        seqs = sorted(rows)
        raw = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(seqs), CHUNK):
            part = seqs[start : start + CHUNK]
            out = self._text.embed(part)
            for x, vec in zip(part, out):
                raw[rows[x]] = vec
            if progress:
                progress(sum(len(rows[x]) for x in part))
        return raw

    def check_precision(self, modality: str, sample: list) -> None:
        """Once per modality: the vectors of ``sample`` must match the plain fp32 path, else
        every later call falls back, with a warning. Images: the low precision (cosine >=
        0.999), else fp32. Texts: the prefix path at this precision (0.999; 0.9999 in fp32,
        where only rounding may differ), else the prefix path in fp32, else the plain path."""
        if modality in self.checked or not sample:
            return
        if modality == "text" and self._text is not None:
            started = time.perf_counter()
            self._check_text(sample)
            self._add_seconds("check", started)
            return
        if self.precision == "fp32":
            return
        ref = _unit(self._encode(sample, self.batch_size, self._st))[0]
        low = _unit(self._encode(sample, self.batch_size))[0]
        cosine = float(np.min(np.sum(ref * low, axis=1)))
        self.checked[modality] = cosine
        log.info("%s %s vectors vs fp32 on %d samples: lowest cosine %.6f", self.precision, modality, len(sample), cosine)
        if cosine < MIN_COSINE:
            log.warning("%s %s vectors differ from fp32 (cosine %.5f < %s): falling back to fp32",
                        self.precision, modality, cosine, MIN_COSINE)  # fmt: skip
            self._to_fp32()

    def _to_fp32(self) -> None:
        self._fast, self.precision = None, "fp32"
        if self._text is not None:
            self._text = PrefixTextPath.from_clip(self._clip)

    def _check_text(self, sample: list[str]) -> None:
        ref = _unit(self._encode(sample, self.batch_size, self._st))[0]
        while self._text is not None:
            got = _unit(self._text.embed(self._model_ids(sample)))[0]
            cosine = float(np.min(np.sum(ref * got, axis=1)))
            self.checked["text"] = cosine
            floor = PREFIX_MIN_COSINE if self.precision == "fp32" else MIN_COSINE
            log.info("%s prefix-path text vectors vs plain fp32 on %d samples: lowest cosine %.6f", self.precision, len(sample), cosine)
            if cosine >= floor:
                return
            if self.precision != "fp32":
                log.warning("%s text vectors differ from fp32 (cosine %.5f < %s): falling back to fp32", self.precision, cosine, floor)
                self._to_fp32()
            else:
                log.warning("prefix-path text vectors differ from the plain path (cosine %.6f < %s): using the plain path", cosine, floor)
                self._text = None
        self.check_precision("text", sample)  # the plain path, as checked without the prefix path

    def embed_texts(self, texts: Sequence[str], progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors (N, dim) and raw norms (N,). The prefix path computes shared token
        prefixes once; the plain path sorts texts by token count and hands them over in
        chunks, so each padded batch holds texts of similar length."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.float32)
        order = np.argsort(self.count_tokens(texts), kind="stable")
        spread = order[np.linspace(0, len(order) - 1, min(CHECK_SAMPLE, len(order))).astype(int)]
        self.check_precision("text", [texts[i] for i in spread])
        if self._text is not None:
            return _unit(self._embed_prefix(texts, progress))
        started = time.perf_counter()
        raw = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(texts), CHUNK):
            idx = order[start : start + CHUNK]
            raw[idx] = self._encode([texts[i] for i in idx], self.batch_size)
            if progress:
                progress(len(idx))
        self._add_seconds("plain pass", started)
        return _unit(raw)

    def embed_images(self, images: Sequence, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors (N, dim) and raw norms (N,) for PIL images."""
        if not images:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.float32)
        pictures = [im.convert("RGB") for im in images]
        self.check_precision("image", pictures[:CHECK_SAMPLE])
        raw = self._encode(pictures, min(self.batch_size, 32))
        if progress:
            progress(len(images))
        return _unit(raw)


def _dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _quiet_blas() -> None:
    """One BLAS thread for numpy in a process that runs CLIP on the CPU: idle OpenBLAS
    threads spin and took half the cores from torch (one-image encode 143 ms instead of 63 ms
    with a numpy product between encodes); whyclip's numpy products are small."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: fp16 on a GPU, bf16 on a CPU that computes it natively, else fp32."""
    if precision not in PRECISIONS:
        raise ModelLoadError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    import torch

    cpu_bf16 = device == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "bf16" if cpu_bf16 else "fp32"
    if precision == "bf16" and device == "cpu" and not cpu_bf16:
        log.warning("this CPU has no native bf16: using fp32")
        return "fp32"
    if precision == "fp16" and device == "cpu":
        log.warning("fp16 is slow on CPUs: using fp32 (bf16 is the fast choice where the CPU supports it)")
        return "fp32"
    return precision


def _load_sentence_transformer(model: str, device: str | None):
    as_path = Path(model).expanduser()
    if _looks_like_path(model):
        if not as_path.is_dir():
            raise ModelLoadError(f"model folder {as_path} does not exist: pass --model PATH to a CLIP folder")
        if not (as_path / "config.json").is_file() and not (as_path / "modules.json").is_file():
            raise ModelLoadError(
                f"{as_path} is not a model folder (no config.json or modules.json): "
                "pass --model PATH to a CLIP folder saved with save_pretrained"
            )
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ModelLoadError(f"sentence-transformers is not importable ({exc}): reinstall whyclip") from None
    if _looks_like_path(model):
        try:
            st = SentenceTransformer(str(as_path), device=device)
        except Exception as exc:  # a corrupt folder, not a CLIP model
            raise ModelLoadError(f"cannot load the CLIP model in {as_path}: {_first_line(exc)}") from None
    else:
        st = _load_by_name(SentenceTransformer, model, device)
    module = st[0]
    clip = getattr(module, "auto_model", None) or getattr(module, "model", None)
    if clip is None or not hasattr(clip, "get_text_features") or not hasattr(clip, "logit_scale"):
        raise ModelLoadError(f"{model!r} is not a CLIP model (no text/image towers and logit scale): pass --model PATH to a CLIP folder")
    return st


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the model hub, so an offline machine fails in seconds
    instead of retrying every file for a minute."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_by_name(factory, model: str, device: str | None):
    """The local cache first; the hub only when the model is not cached and the hub answers."""
    try:
        return factory(model, device=device, local_files_only=True)
    except Exception:
        log.info("%s is not in the local cache", model)
    offline_hint = (
        "pass --model PATH to a local CLIP folder ('whyclip make-test-model DIR' writes a "
        "random-weight one for plumbing checks), or connect to the internet once to download it"
    )
    if not _hub_reachable():
        raise ModelLoadError(f"cannot load CLIP model {model!r}: it is not in the local cache and the model hub cannot be reached (no network?): {offline_hint}")
    try:
        return factory(model, device=device)
    except Exception as exc:
        raise ModelLoadError(f"cannot load CLIP model {model!r} ({_first_line(exc)}): {offline_hint}") from None


def load_encoder(model: str | None = None, device: str | None = None, precision: str = "auto",
                 share_prefixes: bool = True) -> ClipEncoder:  # fmt: skip
    """Load a CLIP encoder by sentence-transformers name or local folder (``share_prefixes``
    False: texts always take the plain sentence-transformers path, for comparisons)."""
    return ClipEncoder(model or DEFAULT_MODEL, device=device, precision=precision, share_prefixes=share_prefixes)
