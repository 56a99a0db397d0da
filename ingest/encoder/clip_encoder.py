"""The CLIP encoder (it, :mod:`.clipmodel`, :mod:`.textpath`, :mod:`.texttower` and :mod:`.vision` import torch).

A model is a sentence-transformers name (default ``clip-ViT-B-32``, downloaded on first
use where there is internet) or a local folder (a plain transformers CLIP folder, such as
one written by ``whyclip make-test-model``). A transformers CLIP folder, or a hub model
already cached whose folder holds one, is loaded with transformers alone, each tower when
first used (explain loads only the image tower; sentence-transformers, seconds to import,
is not imported); other models load through sentence-transformers. Texts and images are embedded in batches
sorted by length and padded to the longest in the batch; every call returns unit float32
vectors and each vector's raw norm (the centroid aggregate needs it).

Texts take the prefix-sharing path of :mod:`ingest.textpath` (its sibling, the other module
that imports torch) where the model is transformers' CLIP: each text is tokenized once, and
token prefixes shared by several texts are computed once. It is checked against the plain
fp32 vectors on a sample, like a lower precision, and falls back. Each verdict is stored
(:mod:`whyclip.store.db.precision_verdicts`) under the weights, precision, path, rule and platform, so
later processes skip the check.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from whyclip.ingest.encoder.fingerprint import ID_VERSION, content_fingerprint, legacy_fingerprint
from whyclip.ingest.encoder.loading import (
    DEFAULT_MODEL,
    RANDOM_WEIGHTS,
    clip_folder_of,
    first_line,
    is_test_model,
    load_sentence_transformer,
    model_name,
)
from whyclip.ingest.encoder.precision import platform_signature, resolve_precision, torch_dtype
from whyclip.ingest.encoder.prepared import PreparedImages
from whyclip.ingest.encoder.textpath import PrefixTextPath, unsupported_reason
from whyclip.ingest.images import PIXEL_RULES
from whyclip.store import EncoderInfo, ModelLoadError

log = logging.getLogger(__name__)

CLIP_MAX_TOKENS = 77
CHUNK = 1024  # prompts handed to sentence-transformers at once (progress granularity)

CHECK_SAMPLE = 16  # vectors compared with fp32 before a lower precision is trusted
MIN_COSINE = 0.999
PREFIX_MIN_COSINE = 0.9999  # the fp32 prefix path against the plain fp32 path (rounding only)
CHECK_RULE = f"n{CHECK_SAMPLE} cos{MIN_COSINE} prefix-fp32 {PREFIX_MIN_COSINE}"  # part of a stored verdict's key
MAX_CACHED_IDS = 500_000  # token-id sequences remembered between count_tokens and embed_texts

Progress = Callable[[int], None]


def _unit(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(raw, dtype=np.float32)
    norms = np.linalg.norm(raw, axis=1)
    return raw / np.maximum(norms, 1e-12)[:, None], norms


class ClipEncoder:
    """CLIP text and image towers: a transformers CLIP folder loaded directly, one tower at
    a time when first used; other models through sentence-transformers.

    Precision is settled per modality, once, under a lock (:meth:`check_precision`): after
    that a modality's precision and cache key never change, so threads sharing an encoder
    (the service's micro-batcher and an ingest job) cannot mix vectors of two precisions.
    A verdict is remembered in ``verdicts`` (the store's, :mod:`whyclip.store.db.precision_verdicts`)
    and later processes take it from there instead of checking again."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str | None = None,
        batch_size: int = 64,
        precision: str = "auto",
        share_prefixes: bool = True,
        verdicts=None,
    ):
        self.model_spec = model
        self.requested_precision = precision  # as asked ("auto" included): what a Ray actor is asked for
        self.share_prefixes = share_prefixes
        self.batch_size = batch_size
        self.verdicts = verdicts  # get(key) / put(key, passed, cosine); None: check in every process
        self.checks_run = 0  # precision checks computed by this encoder (not taken from verdicts)
        self.seconds: dict[str, float] = {}  # where the time went: load, tokenize, check, embed
        self._lock = threading.RLock()
        self._setup_s = 0.0  # loading after the constructor: towers, copies, checks (see load_seconds)
        self._setup_depth = threading.local()
        self._setup_lock = threading.Lock()
        started = time.perf_counter()
        folder = clip_folder_of(model)
        # The fp32 model: a TransformersClip or a SentenceTransformer, which share the API used
        # here (encode, device, towers); ``backend`` says which, for the parts they do not share.
        self._st: Any
        self._tensors = None
        self._full = None  # a whole transformers CLIPModel, loaded only when needed (legacy ids)
        if folder is not None:
            from whyclip.ingest.encoder.clipmodel import TransformersClip
            from whyclip.ingest.encoder.fingerprint import safetensors_tensors

            try:
                self._st = TransformersClip(folder, device)
                self._tensors = safetensors_tensors(folder)
            except Exception as exc:  # a corrupt config or weights header
                raise ModelLoadError(f"cannot load the CLIP model in {folder}: {first_line(exc)}") from None
            self._st.loading = self._setting_up  # its towers load on first use: that time is loading too
            config = self._st.config
            self.backend = "transformers"
        else:
            self._st = load_sentence_transformer(model, device)
            module = self._st[0]
            self._full = getattr(module, "auto_model", None) or module.model
            config = self._full.config
            self.backend = "sentence-transformers"
        self.config = config
        self.seconds["load"] = time.perf_counter() - started
        positions = config.text_config.max_position_embeddings
        self.max_tokens = int(min(positions, CLIP_MAX_TOKENS))
        if self.backend == "sentence-transformers":
            self._st.max_seq_length = self.max_tokens  # truncate, never crash, on long prompts
        self.dim = int(config.projection_dim)
        self.name = model_name(model)
        t = time.perf_counter()
        if self._tensors is not None and "logit_scale" in self._tensors:
            from whyclip.ingest.encoder.fingerprint import file_fingerprint, read_tensor

            fingerprint = file_fingerprint(config, self._tensors)
            import torch

            self.logit_scale = float(torch.from_numpy(read_tensor(self._tensors["logit_scale"])).exp().item())
        else:
            fingerprint = content_fingerprint(self._clip_model())
            self.logit_scale = float(self._clip_model().logit_scale.exp().item())
        self.id = f"clip-{self.dim}-{ID_VERSION}-{fingerprint}"
        self.seconds["fingerprint"] = time.perf_counter() - t
        self.device = str(self._st.device)
        resolved = resolve_precision(precision, self.device)
        self.precisions = {"text": resolved, "image": resolved}  # each settled by its check
        self._fast: Any = None  # the low-precision sibling model (a copy of ``_st``), made on first use
        self._ids: dict[str, tuple[int, ...]] = {}  # text -> token ids, so each text is tokenized once
        self._text: PrefixTextPath | None = None  # the prefix-sharing text path; None: not (yet) built
        self._share = share_prefixes  # False: the plain path (prefix sharing off, unsupported, or failed its check)
        self.checked: dict[str, float] = {}  # modality -> lowest cosine with fp32 on the check sample
        if self.device == "cpu":
            _quiet_blas()
        if is_test_model(self.name):
            log.warning("%s %s", self.name, RANDOM_WEIGHTS)

    # -- what this encoder is ------------------------------------------------------------

    @property
    def precision(self) -> str:
        """The numeric precision (one word when both modalities run in it)."""
        t, i = self.precisions["text"], self.precisions["image"]
        return t if t == i else f"text {t}, images {i}"

    @property
    def load_seconds(self) -> float:
        """Seconds this encoder has spent loading so far: its constructor, then the towers,
        tokenizer and image processor loaded on first use, the lower-precision copy and the
        one-time precision checks (a caller timing its own work subtracts this: see
        ``whyclip eval``'s stages)."""
        return self.seconds.get("load", 0.0) + self.seconds.get("fingerprint", 0.0) + self._setup_s

    @contextmanager
    def _setting_up(self) -> Iterator[None]:
        """Count the time inside as loading (:attr:`load_seconds`); nested, once."""
        depth = getattr(self._setup_depth, "n", 0)
        self._setup_depth.n = depth + 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self._setup_depth.n = depth
            if depth == 0:
                with self._setup_lock:
                    self._setup_s += time.perf_counter() - started

    @property
    def cache_key(self) -> str:
        """Identifies the text vectors this encoder makes: weights and numeric precision."""
        return f"{self.id}/{self.precisions['text']}"

    @property
    def image_cache_key(self) -> str:
        """Identifies the image vectors: weights, precision and the pixel rules."""
        return f"{self.id}/{self.precisions['image']}/image/{PIXEL_RULES}"

    @property
    def info(self) -> EncoderInfo:
        return EncoderInfo(id=self.id, name=self.name, dim=self.dim, logit_scale=self.logit_scale)

    @property
    def tokenizer(self):
        if self.backend == "transformers":
            return self._st.tokenizer
        module = self._st[0]
        return getattr(module, "tokenizer", None) or module.processor.tokenizer

    @property
    def loaded_towers(self) -> set[str]:
        """The towers in memory ("text", "image"; both for a sentence-transformers model)."""
        if self.backend != "transformers":
            return {"text", "image"}
        return set(self._st.towers) | (set(self._fast.towers) if self._fast is not None else set())

    def _clip_model(self):
        """A whole transformers ``CLIPModel`` (fp32), loaded on first use: only the legacy ids
        and checkpoints that are not safetensors need it."""
        with self._lock:
            if self._full is None:
                from transformers import CLIPModel

                try:
                    with self._setting_up():
                        self._full = CLIPModel.from_pretrained(self._st.folder, dtype=torch_dtype("fp32")).eval()
                except Exception as exc:
                    raise ModelLoadError(
                        f"cannot load the CLIP model in {self._st.folder}: {first_line(exc)}"
                    ) from None
            return self._full

    @property
    def _clip(self):
        """The model the prefix path reads its text tower from (``text_model`` and
        ``text_projection``), fp32."""
        return self._st.tower("text") if self.backend == "transformers" else self._full

    def _fingerprint(self) -> str:
        """The content id's hash: architecture and weights, not the path or library versions
        (see :mod:`whyclip.ingest.encoder.fingerprint`)."""
        return self.id.rsplit("-", 1)[1]

    def legacy_ids(self, names: Sequence[str] = ()) -> set[str]:
        """The ids whyclip gave this model before content ids (path-dependent), had it been
        loaded as any of ``names``, the folder or name as given, or the current load path."""
        current = str(getattr(self._clip_model().config, "_name_or_path", "") or "")
        spec = self.model_spec
        candidates = {*names, spec, str(Path(spec).expanduser()), self.name, current} - {""}
        return {self.legacy_fingerprint(c) for c in sorted(candidates)}

    def legacy_fingerprint(self, name_or_path: str) -> str:
        """The id whyclip gave this model before content ids, had it been loaded as
        ``name_or_path`` (the old, path-dependent algorithm; for recognising stored ids)."""
        return legacy_fingerprint(self._clip_model(), name_or_path)

    # -- tokens --------------------------------------------------------------------------

    def token_ids(self, texts: Sequence[str]) -> list[tuple[int, ...]]:
        """Token ids per text, start and end tokens included, not truncated. Each text is
        tokenized once: the ids are remembered for :meth:`count_tokens` and the text path."""
        with self._lock:  # threads share the remembered ids
            new = [t for t in dict.fromkeys(texts) if t not in self._ids]
        if not new:
            with self._lock:
                return [self._ids[t] for t in texts]
        # tokenized outside the lock: a large library's tokens take seconds, and the lock
        # also guards what an image encode needs (another thread's explain must not wait)
        started = time.perf_counter()
        ids = self.tokenizer(new, add_special_tokens=True, truncation=False, return_attention_mask=False)["input_ids"]
        fresh = dict(zip(new, map(tuple, ids), strict=True))
        with self._lock:
            known = {t: self._ids[t] for t in texts if t in self._ids}
            if len(self._ids) + len(new) > MAX_CACHED_IDS:
                self._ids.clear()
            self._ids.update(fresh)
            self._add_seconds("tokenize", started)
            return [fresh[t] if t in fresh else known[t] for t in texts]

    def _add_seconds(self, stage: str, started: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started

    def describe_work(self) -> str:
        """One line on where the time went (``whyclip -v`` logs it after an ingest)."""
        parts = [f"{k} {v:.2f}s" for k, v in self.seconds.items()]
        if self._text is not None:
            st = self._text.stats
            parts.append(
                f"shared-prefix pass {st.shared_s:.2f}s, suffix pass {st.own_s:.2f}s; tokens computed "
                f"{st.shared_tokens + st.own_tokens:,} of {st.plain_tokens:,} ({st.shared_tokens:,} in shared prefixes)"
            )
        return (
            f"encoder ({self.precision}, {self.backend}, towers {', '.join(sorted(self.loaded_towers))}): "
            + ", ".join(parts)
        )

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, start and end tokens included (CLIP's limit is 77)."""
        return [len(x) for x in self.token_ids(list(texts))]

    # -- models at a precision -----------------------------------------------------------

    def _plain_model(self, modality: str = "text"):
        """The plain model (sentence-transformers, or the transformers towers) at the
        modality's precision: the fp32 one, or its low-precision sibling."""
        precision = self.precisions[modality]
        if precision == "fp32":
            return self._st
        if self._fast is not None:  # no lock once made: a text check holds it for seconds
            return self._fast
        with self._lock, self._setting_up():
            if self._fast is None:
                if self.backend == "transformers":
                    self._fast = self._st.copy_as(torch_dtype(precision))
                else:
                    self._fast = copy.deepcopy(self._st).to(torch_dtype(precision))
            return self._fast

    def _encode(self, items: list, batch_size: int, model=None, modality: str = "text") -> np.ndarray:
        model = model or self._plain_model(modality)
        return model.encode(
            items, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=False, show_progress_bar=False
        ).astype(np.float32)

    def _text_path(self):
        """The prefix-sharing path at the text precision, built on first use (None: the
        plain path). A transformers model's path runs on its text tower at that precision
        (loaded and converted once); a sentence-transformers model's on a converted copy."""
        with self._lock:
            if self._text is None and self._share:
                with self._setting_up():
                    t = time.perf_counter()
                    precision = self.precisions["text"]
                    own = self.backend == "transformers"
                    clip = self._plain_model("text").tower("text") if own else self._full
                    reason = unsupported_reason(clip)
                    if reason:
                        log.info("texts take the plain path: %s", reason)
                        self._share = False
                        return None
                    self._text = PrefixTextPath.from_clip(clip, None if own else torch_dtype(precision))
                    self._add_seconds("text_copy", t)
            return self._text

    def _model_ids(self, texts: list[str]) -> list[tuple[int, ...]]:
        """The ids the plain path gives the model: texts over the limit truncated by the
        tokenizer exactly as sentence-transformers asks it to (the end token kept)."""
        ids = self.token_ids(texts)
        long = [i for i, x in enumerate(ids) if len(x) > self.max_tokens]
        if long:
            cut = self.tokenizer(
                [texts[i] for i in long],
                add_special_tokens=True,
                truncation="longest_first",
                max_length=self.max_tokens,
                return_attention_mask=False,
            )["input_ids"]
            ids = list(ids)
            for i, x in zip(long, cut, strict=True):
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
        text_path = self._text
        assert text_path is not None  # only called once _text_path() has built it
        for start in range(0, len(seqs), CHUNK):
            part = seqs[start : start + CHUNK]
            out = text_path.embed(part)
            for x, vec in zip(part, out, strict=True):
                raw[rows[x]] = vec
            if progress:
                progress(sum(len(rows[x]) for x in part))
        return raw

    # -- the precision check -------------------------------------------------------------

    def verdict_key(self, modality: str, precision: str, path: str) -> dict[str, str]:
        """What a precision verdict holds for: these weights (the content id), the modality,
        the precision, the path (``prefix``: whyclip's prefix-sharing text path; ``plain``:
        the model's own forward), the check's rule (sample size and cosine floors) and the
        platform, whose kernels make the rounding (torch and transformers versions, the
        backend, the device: CPU instruction set or GPU model)."""
        return {
            "encoder_id": self.id,
            "modality": modality,
            "precision": precision,
            "path": path,
            "rule": CHECK_RULE,
            "platform": platform_signature(self.device, self.backend),
        }

    def _verdict(self, modality: str, path: str, floor: float, compute: Callable[[], float]) -> tuple[bool, float]:
        """(passed, lowest cosine): from ``verdicts`` when they hold this check, else computed
        (and remembered there)."""
        key = self.verdict_key(modality, self.precisions[modality], path)
        known = self.verdicts.get(key) if self.verdicts is not None else None
        if known is not None:
            log.info(
                "%s %s vectors (%s path): the store's verdict, lowest cosine %.6f",
                key["precision"],
                modality,
                path,
                known[1],
            )
            return known
        self.checks_run += 1
        cosine = compute()
        passed = cosine >= floor
        if self.verdicts is not None:
            self.verdicts.put(key, passed, cosine)
        return passed, cosine

    def check_precision(self, modality: str, sample: list) -> None:
        """Once per modality (thread-safe): the vectors of ``sample`` must match the plain
        fp32 path, else that modality falls back for good, with a warning. Images: the low
        precision (cosine >= 0.999), else fp32. Texts: the prefix path at this precision
        (0.999; 0.9999 in fp32, where only rounding may differ), else the prefix path in
        fp32, else the plain path. A stored verdict stands for the check."""
        if isinstance(sample, PreparedImages):
            sample = sample.pixels[:CHECK_SAMPLE]
        if modality in self.checked or len(sample) == 0:
            return
        if modality != "text" and self.precisions[modality] == "fp32":
            return  # nothing to compare with fp32; and no lock, which a text check may hold for seconds
        with self._lock, self._setting_up():
            if modality in self.checked:  # another thread settled it meanwhile
                return
            started = time.perf_counter()
            if modality == "text" and self._text_path() is not None:
                self._check_text(sample)
            elif self.precisions[modality] != "fp32":
                self._check_plain(modality, sample)
            self._add_seconds("check", started)

    def _check_plain(self, modality: str, sample: list) -> None:
        precision = self.precisions[modality]

        def compute() -> float:
            ref = _unit(self._reference(modality, sample))[0]
            low = _unit(self._encode_modality(modality, sample, self._plain_model(modality)))[0]
            return float(np.min(np.sum(ref * low, axis=1)))

        passed, cosine = self._verdict(modality, "plain", MIN_COSINE, compute)
        self.checked[modality] = cosine
        log.info("%s %s vectors vs fp32 on %d samples: lowest cosine %.6f", precision, modality, len(sample), cosine)
        if not passed:
            log.warning(
                "%s %s vectors differ from fp32 (cosine %.5f < %s): falling back to fp32",
                precision,
                modality,
                cosine,
                MIN_COSINE,
            )
            self.precisions[modality] = "fp32"
            if self._fast is not None and self.backend == "transformers":
                self._fast.drop(modality)
        elif self.backend == "transformers" and modality == "image":
            self._st.drop("image")  # the fp32 reference is not needed any more

    def _reference(self, modality: str, sample: list) -> np.ndarray:
        return self._encode_modality(modality, sample, self._st)

    def _encode_modality(self, modality: str, sample, model) -> np.ndarray:
        if modality == "image" and self.backend == "transformers":
            return model.encode_pixels(sample if hasattr(sample, "shape") else model.pixels(sample))
        return self._encode(list(sample), self.batch_size, model)

    def _check_text(self, sample: list[str]) -> None:
        ref: list[np.ndarray] = []

        def compute() -> float:
            if not ref:
                ref.append(_unit(self._encode(sample, self.batch_size, self._st))[0])
            text_path = self._text
            assert text_path is not None  # compute runs inside the loop below, which built it
            got = _unit(text_path.embed(self._model_ids(sample)))[0]
            return float(np.min(np.sum(ref[0] * got, axis=1)))

        while self._text_path() is not None:
            precision = self.precisions["text"]
            floor = PREFIX_MIN_COSINE if precision == "fp32" else MIN_COSINE
            passed, cosine = self._verdict("text", "prefix", floor, compute)
            self.checked["text"] = cosine
            log.info(
                "%s prefix-path text vectors vs plain fp32 on %d samples: lowest cosine %.6f",
                precision,
                len(sample),
                cosine,
            )
            if passed:
                if precision != "fp32" and self.backend == "transformers":
                    self._st.drop("text")  # the fp32 reference is not needed any more
                return
            self._text = None
            if precision != "fp32":
                log.warning(
                    "%s text vectors differ from fp32 (cosine %.5f < %s): falling back to fp32",
                    precision,
                    cosine,
                    floor,
                )
                self.precisions["text"] = "fp32"
            else:
                log.warning(
                    "prefix-path text vectors differ from the plain path (cosine %.6f < %s): using the plain path",
                    cosine,
                    floor,
                )
                self._share = False

    # -- embedding -----------------------------------------------------------------------

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
        if self._text_path() is not None:
            return _unit(self._embed_prefix(texts, progress))
        started = time.perf_counter()
        raw = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(texts), CHUNK):
            idx = order[start : start + CHUNK]
            raw[idx] = self._encode([texts[i] for i in idx], self.batch_size, modality="text")
            if progress:
                progress(len(idx))
        self._add_seconds("plain pass", started)
        return _unit(raw)

    def map_model(self):
        """The image tower (fp32) and processor that maps of this encoder's images are made
        with (:class:`whyclip.ingest.encoder.decompose.MapModel`), loaded on first use."""
        from whyclip.ingest.encoder.decompose import MapModel

        with self._lock:
            if getattr(self, "_maps", None) is None:
                with self._setting_up():
                    if self.backend == "transformers":
                        tower, processor = self._st.tower("image"), self._st.image_processor
                    else:  # sentence-transformers' CLIP module holds a whole transformers CLIPModel
                        module = self._st[0]
                        tower = self._full
                        processor = getattr(module.processor, "image_processor", module.processor)
                    self._maps = MapModel(tower, processor)
            return self._maps

    def prepare_images(self, images: Sequence):
        """What :meth:`embed_images` takes, made ahead (CPU work that may run in another
        thread while a batch encodes): RGB conversion and the image processor's pixels."""
        pictures = [im if im.mode == "RGB" else im.convert("RGB") for im in images]  # no full-size copy
        if self.backend != "transformers" or not pictures:
            return pictures
        return PreparedImages(self._st.pixels(pictures), len(pictures))

    def embed_images(self, images, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors (N, dim) and raw norms (N,) for PIL images (or what
        :meth:`prepare_images` made of them)."""
        if not isinstance(images, PreparedImages):
            images = self.prepare_images(images)
        n = len(images)
        if not n:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.float32)
        if isinstance(images, PreparedImages):
            self.check_precision("image", images.pixels[:CHECK_SAMPLE])
            model = self._plain_model("image")
            step = min(self.batch_size, 32)
            raw = np.concatenate([model.encode_pixels(images.pixels[s : s + step]) for s in range(0, n, step)])
        else:
            self.check_precision("image", images[:CHECK_SAMPLE])
            raw = self._encode(images, min(self.batch_size, 32), modality="image")
        if progress:
            progress(n)
        return _unit(raw)


def _quiet_blas() -> None:
    """One BLAS thread for numpy in a process that runs CLIP on the CPU: idle OpenBLAS
    threads spin and took half the cores from torch (one-image encode 143 ms instead of 63 ms
    with a numpy product between encodes); whyclip's numpy products are small."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def load_encoder(
    model: str | None = None,
    device: str | None = None,
    precision: str = "auto",
    share_prefixes: bool = True,
    verdicts=None,
) -> ClipEncoder:
    """Load a CLIP encoder by sentence-transformers name or local folder (``share_prefixes``
    False: texts always take the plain path, for comparisons; ``verdicts``: where precision
    verdicts are remembered, such as :class:`whyclip.store.db.precision_verdicts.StoreVerdicts`)."""
    return ClipEncoder(
        model or DEFAULT_MODEL, device=device, precision=precision, share_prefixes=share_prefixes, verdicts=verdicts
    )
