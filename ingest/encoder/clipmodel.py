"""CLIP from a transformers folder without sentence-transformers, each tower loaded when
it is first used (used by ingest/encoder/clip_encoder.py).

``encode`` computes what sentence-transformers' ``encode`` computes for a CLIP model (the
tokenizer and image processor ``AutoProcessor`` would hold; texts padded per batch
and truncated to 77 tokens; ``get_text_features`` / ``get_image_features``), so vectors
cached by either path are the same vectors. Loading sentence-transformers costs seconds
(it imports scikit-learn), and explain needs only the image tower: a
``CLIPVisionModelWithProjection`` holds half of ViT-B/32's weights. The image tower and its
preprocessing come from :mod:`.vision` (plain torch and PIL, checked against transformers)
for every folder it knows, and so do the text tower (:mod:`.texttower`) and the tokenizer
(:mod:`.tokenizer`, the ``tokenizers`` library alone), because importing transformers'
models, tokenizers or image processors costs seconds a process; transformers loads the
rest (each refusal is logged with its reason).

A tower is loaded in float32 and converted to the copy's dtype once; :meth:`copy_as`
makes a lower-precision sibling that shares the folder and copies only the towers
already loaded (the others load straight into its dtype).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)
MAX_TOKENS = 77
ST_CLIP_MODULES = (
    "sentence_transformers.models.CLIPModel",
    "sentence_transformers.sentence_transformer.modules.CLIPModel",
    "sentence_transformers.base.modules.transformer.Transformer",
    "sentence_transformers.models.Transformer",
)


def clip_folder(folder: Path) -> Path | None:
    """The transformers CLIP folder inside ``folder``: the folder itself when its config says
    ``model_type: clip``, or the one module of a sentence-transformers CLIP folder
    (``modules.json`` naming one CLIP module, such as ``0_CLIPModel``); else None."""
    modules = folder / "modules.json"
    if modules.is_file():
        try:
            listed = json.loads(modules.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(listed, list) or len(listed) != 1 or listed[0].get("type") not in ST_CLIP_MODULES:
            return None
        folder = folder / str(listed[0].get("path", ""))
    config = folder / "config.json"
    try:
        kind = json.loads(config.read_text()).get("model_type") if config.is_file() else None
    except (OSError, ValueError):
        return None
    return folder if kind == "clip" else None


class TransformersClip:
    """The towers of a transformers CLIP folder, loaded on demand, with an ``encode`` like
    sentence-transformers'. Thread-safe: a tower loads once under a lock."""

    def __init__(self, folder: Path, device: str | None = None, dtype: torch.dtype = torch.float32):
        from whyclip.ingest.encoder.config import read_config

        self.folder = Path(folder)
        self.config: Any = read_config(self.folder)
        if self.config is None:  # keys left to transformers' defaults
            from transformers import CLIPConfig

            self.config = CLIPConfig.from_pretrained(self.folder)
        if self.config.projection_dim is None:
            raise ValueError(f"{self.folder}: its config.json gives no projection_dim")
        self.dim: int = self.config.projection_dim
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype
        # "text" / "image" -> CLIP*ModelWithProjection (image: or .vision's)
        self.towers: dict[str, torch.nn.Module] = {}
        # transformers' Auto* classes (or .vision's image processor), each loaded on first use
        self._tokenizer: Any = None
        self._image_processor: Any = None
        self._lock = threading.RLock()  # towers
        # what loading runs inside (the encoder's timer: its load_seconds counts towers loaded late)
        self.loading: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
        # tokenizer and image processor (a decode thread needs one while a tower loads)
        self._processor_lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------

    @property
    def tokenizer(self):
        """The tokenizer sentence-transformers' ``AutoProcessor`` holds (``AutoTokenizer``,
        or :class:`.tokenizer.ClipTokenizer`, which gives its ids without transformers;
        loaded alone: explain needs no tokenizer)."""
        with self._processor_lock:
            if self._tokenizer is None:
                with self.loading():
                    if self.plain_tokenizer_reason is None:
                        from whyclip.ingest.encoder.tokenizer import ClipTokenizer

                        self._tokenizer = ClipTokenizer(self.folder)
                    else:
                        from transformers import AutoTokenizer

                        self._tokenizer = AutoTokenizer.from_pretrained(self.folder)
            return self._tokenizer

    @property
    def plain_tokenizer_reason(self) -> str | None:
        """Why the tokenizer is transformers' rather than :mod:`.tokenizer`'s; None when
        it is :mod:`.tokenizer`'s."""
        if not hasattr(self, "_plain_tokenizer_reason"):
            from whyclip.ingest.encoder.tokenizer import unsupported_reason

            self._plain_tokenizer_reason = unsupported_reason(self.folder)
            if self._plain_tokenizer_reason is not None:
                log.info("tokenizer of %s through transformers: %s", self.folder, self._plain_tokenizer_reason)
        return self._plain_tokenizer_reason

    @property
    def plain_text_reason(self) -> str | None:
        """Why the text tower comes from transformers rather than :mod:`.texttower`; None
        when it comes from :mod:`.texttower`."""
        if not hasattr(self, "_plain_text_reason"):
            from whyclip.ingest.encoder.texttower import unsupported_reason

            self._plain_text_reason = unsupported_reason(self.folder)
            if self._plain_text_reason is not None:
                log.info("text tower of %s through transformers: %s", self.folder, self._plain_text_reason)
        return self._plain_text_reason

    @property
    def image_processor(self):
        """The image processor of ``AutoProcessor`` (``AutoImageProcessor``, loaded alone)."""
        with self._processor_lock:
            if self._image_processor is None:
                with self.loading():
                    if self.plain_vision_reason is None:
                        from whyclip.ingest.encoder.vision import image_processor

                        self._image_processor = image_processor(self.folder)
                    else:
                        from transformers import AutoImageProcessor

                        self._image_processor = AutoImageProcessor.from_pretrained(self.folder)
            return self._image_processor

    @property
    def plain_vision_reason(self) -> str | None:
        """Why the image tower and processor come from transformers rather than
        :mod:`.vision` (seconds faster to start); None when they come from :mod:`.vision`."""
        if not hasattr(self, "_plain_vision_reason"):
            from whyclip.ingest.encoder.vision import unsupported_reason

            self._plain_vision_reason = unsupported_reason(self.folder)
            if self._plain_vision_reason is not None:
                log.info("image tower of %s through transformers: %s", self.folder, self._plain_vision_reason)
        return self._plain_vision_reason

    def tower(self, modality: str):
        """The text or image tower (``CLIPTextModelWithProjection``,
        ``CLIPVisionModelWithProjection``, or their plain-torch equals from
        :mod:`.texttower` and :mod:`.vision`), loaded on first use."""
        loaded = self.towers.get(modality)
        if loaded is not None:  # no lock once loaded: loading the other tower holds it for seconds
            return loaded
        with self._lock, self.loading():
            if modality not in self.towers:
                model: torch.nn.Module
                try:
                    if modality == "image" and self.plain_vision_reason is None:
                        from whyclip.ingest.encoder.vision import load_vision_tower

                        model = load_vision_tower(self.folder)
                    elif modality == "text" and self.plain_text_reason is None:
                        from whyclip.ingest.encoder.texttower import load_text_tower

                        model = load_text_tower(self.folder)
                    else:
                        from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection
                        from transformers.utils import logging as transformers_logging

                        cls = CLIPTextModelWithProjection if modality == "text" else CLIPVisionModelWithProjection
                        # one tower of a whole CLIP: the other tower's weights are "unexpected" by
                        # design, and transformers would print a load report of them (and a
                        # progress bar of a local read) to every user of the Python API
                        verbosity, bars = (
                            transformers_logging.get_verbosity(),
                            transformers_logging.is_progress_bar_enabled(),
                        )
                        transformers_logging.set_verbosity_error()
                        transformers_logging.disable_progress_bar()
                        try:
                            model = cls.from_pretrained(self.folder, dtype=torch.float32)
                        finally:
                            transformers_logging.set_verbosity(verbosity)
                            if bars:
                                transformers_logging.enable_progress_bar()
                except Exception as exc:  # missing or corrupt weights
                    from whyclip.store import ModelLoadError

                    text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                    raise ModelLoadError(f"cannot load the CLIP model in {self.folder}: {text}") from None
                tower: torch.nn.Module = model  # transformers' own annotation of .to() confuses type checkers
                if self.dtype != torch.float32:
                    tower = tower.to(self.dtype)  # the one conversion
                self.towers[modality] = tower.to(self.device).eval()
                log.info("loaded the %s tower of %s (%s)", modality, self.folder, self.dtype)
            return self.towers[modality]

    def parameter_names(self, modality: str) -> set[str]:
        """The names the loaded tower's parameters have in a whole CLIPModel (as the
        checkpoint names them)."""
        return {name for name, _ in self.tower(modality).named_parameters()}

    def copy_as(self, dtype: torch.dtype) -> TransformersClip:
        """A sibling in ``dtype``: towers loaded here are copied and converted, the others
        load straight into ``dtype`` when first used."""
        with self._lock:
            other = copy.copy(self)
            other.dtype, other._lock, other._processor_lock = dtype, threading.RLock(), threading.Lock()
            other.towers = {m: copy.deepcopy(t).to(dtype) for m, t in self.towers.items()}
            return other

    def drop(self, modality: str) -> None:
        """Forget a loaded tower (its memory is freed; it loads again if used)."""
        with self._lock:
            self.towers.pop(modality, None)

    # -- encoding ------------------------------------------------------------------------

    def encode(
        self,
        items: list,
        batch_size: int = 32,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        """Raw projections (N, dim) float32 of texts or PIL images, as sentence-transformers
        computes them (longest first, in batches, back in the given order)."""
        if not items:
            return np.zeros((0, self.dim), np.float32)
        texts = isinstance(items[0], str)
        order = np.argsort([-len(x) for x in items], kind="stable") if texts else np.arange(len(items))
        out = np.zeros((len(items), self.dim), np.float32)
        for start in range(0, len(items), batch_size):
            idx = order[start : start + batch_size]
            part = [items[i] for i in idx]
            out[idx] = self.encode_texts(part) if texts else self.encode_pixels(self.pixels(part))
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        tower = self.tower("text")
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        with torch.inference_mode():
            out = tower(
                input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device)
            )
        return out.text_embeds.float().cpu().numpy()

    def pixels(self, images: list) -> torch.Tensor:
        """The image processor's pixel values (float32) for PIL images: CPU work, safe to
        run in another thread while a batch encodes."""
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def encode_pixels(self, pixel_values: torch.Tensor) -> np.ndarray:
        tower = self.tower("image")
        with torch.inference_mode():
            out = tower(pixel_values=pixel_values.to(self.device, self.dtype))
        return out.image_embeds.float().cpu().numpy()
