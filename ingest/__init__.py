"""Everything that turns raw input into vectors: library readers, prompt templates, the
CLIP encoder and the ingest job. Importing this package does not import torch; the
encoder module does, when a model is loaded."""

from .images import embed_image_files, expand_image_paths, read_image, read_images
from .job import IngestReport, ingest_library
from .prompts import DEFAULT_BASELINE, DEFAULT_TEMPLATE, Template, paper_prompt
from .readers import ParsedLibrary, read_library


def load_encoder(model: str | None = None, device: str | None = None, precision: str = "auto"):
    """Load a CLIP encoder (default ``clip-ViT-B-32``, or a local folder); ``precision``
    is auto (bf16 on capable CPUs, fp16 on GPUs, checked against fp32), fp32, bf16 or fp16."""
    from .encoder import load_encoder as _load

    return _load(model, device, precision)


def make_test_model(directory, **kwargs):
    """Write a random-weight CLIP folder (see ingest.testmodel)."""
    from .testmodel import make_test_model as _make

    return _make(directory, **kwargs)


__all__ = [
    "DEFAULT_BASELINE", "DEFAULT_TEMPLATE", "IngestReport", "ParsedLibrary", "Template",
    "embed_image_files", "expand_image_paths", "ingest_library", "load_encoder", "make_test_model", "paper_prompt",
    "read_image", "read_images", "read_library",
]  # fmt: skip
