"""Everything that turns raw input into vectors: library readers, prompt templates, the
CLIP encoder and the ingest job. Importing this package imports nothing heavy (names load
lazily); the encoder module imports torch, when a model is loaded."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "whyclip.ingest.images": ("embed_image_files", "expand_image_paths", "list_images", "read_image", "read_images"),
    "whyclip.ingest.services.library_ingest": ("IngestReport", "ingest_library"),
    "whyclip.store.method.templates": ("DEFAULT_BASELINE", "DEFAULT_TEMPLATE", "Template", "paper_prompt"),
    "whyclip.ingest.readers": ("ParsedLibrary", "read_library"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    """Names (and submodules, ``ingest.images``) load on first use, so importing one
    submodule, such as the generation package, does not load the store and the job."""
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    else:
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def load_encoder(model: str | None = None, device: str | None = None, precision: str = "auto", verdicts=None):
    """Load a CLIP encoder (default ``clip-ViT-B-32``, or a local folder); ``precision``
    is auto (bf16 on capable CPUs, fp16 on GPUs, checked against fp32), fp32, bf16 or fp16;
    ``verdicts`` remembers the precision checks (``whyclip.store.db.precision_verdicts.StoreVerdicts``)."""
    from whyclip.ingest.encoder.clip_encoder import load_encoder as _load

    return _load(model, device, precision, verdicts=verdicts)


def make_test_model(directory, **kwargs):
    """Write a random-weight CLIP folder (see ingest.encoder.testmodel)."""
    from whyclip.ingest.encoder.testmodel import make_test_model as _make

    return _make(directory, **kwargs)


__all__ = [
    "DEFAULT_BASELINE",
    "DEFAULT_TEMPLATE",
    "IngestReport",
    "ParsedLibrary",
    "Template",
    "embed_image_files",
    "expand_image_paths",
    "ingest_library",
    "list_images",
    "load_encoder",
    "make_test_model",
    "paper_prompt",
    "read_image",
    "read_images",
    "read_library",
]
