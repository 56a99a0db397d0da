"""A deterministic fake CLIP encoder: exact numbers, no model.

A text's vector is a seeded pseudo-random direction (from the text's hash) scaled by
``noise`` in the axes no concept uses, plus a unit step along axis ``i`` for every planted
concept ``i`` the text contains: texts without concepts stay nearly orthogonal to images
that show concepts. An image's vector is built the same way from the concepts listed in its PNG
text chunk ``concepts`` (``|``-separated, ``name*2`` for twice the strength), so a test can
plant what an image "shows".
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, PngImagePlugin

from whyclip.store import EncoderInfo

#: the frogs library the API, surface and regression tests share: concepts the fake encoder
#: plants, and a library with a class that has no descriptors (it falls back to its name)
FROG_CONCEPTS = ["protruding eyes", "bright green colour", "brown or olive skin", "yellow peel"]
FROG_LIBRARY = {
    "tree frog": ["sticky toe pads", "protruding eyes", "bright green colour"],
    "tailed frog": ["brown or olive skin", "a short tail-like extension"],
    "banana": ["yellow peel", "a long curved shape"],
    "plain class": [],
}


def _hash_vector(text: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim)


class FakeEncoder:
    def __init__(self, concepts=(), dim: int = 32, logit_scale: float = 100.0, noise: float = 0.05, tag: str = "v1"):
        self.concepts = list(concepts)
        self.dim = dim
        self.logit_scale = logit_scale
        self.noise = noise
        self.max_tokens = 77
        self.info = EncoderInfo(id=f"fake-{dim}-{tag}", name=f"fake:{tag}", dim=dim, logit_scale=logit_scale)
        self.cache_key = self.info.id
        self.embedded: list[str] = []
        self.image_batches: list[
            int
        ] = []  # sizes of embed_images calls  # every text embedded, in call order (tests count work)

    def _raw(self, text: str, concepts: list[str] | dict[str, float]) -> np.ndarray:
        weights = concepts if isinstance(concepts, dict) else dict.fromkeys(concepts, 1.0)
        v = _hash_vector(text, self.dim) * self.noise
        v[: min(len(self.concepts), self.dim - 1)] = 0.0
        for i, c in enumerate(self.concepts):
            v[i % self.dim] += weights.get(c, 0.0)
        return v * (1.0 + len(text) / 50.0)  # raw norms differ, as CLIP's do

    def count_tokens(self, texts):
        return [len(t.split()) + 2 for t in texts]

    def embed_texts(self, texts, progress=None):
        texts = list(texts)
        self.embedded.extend(texts)
        raw = np.array([self._raw(t, [c for c in self.concepts if c in t]) for t in texts]).reshape(-1, self.dim)
        if progress:
            progress(len(texts))
        return _unit(raw)

    def embed_images(self, images, progress=None):
        self.image_batches.append(len(images))
        raw = []
        for im in images:
            shown = dict(_weighted(c) for c in im.info.get("concepts", "").split("|") if c)
            raw.append(self._raw(f"image:{im.tobytes()[:64].hex()}", shown))
        return _unit(np.array(raw).reshape(-1, self.dim))


def _weighted(concept: str) -> tuple[str, float]:
    """``"green*2"`` -> ("green", 2.0): an image can show a concept more strongly."""
    name, _, weight = concept.partition("*")
    return name, float(weight or 1.0)


def _unit(raw: np.ndarray):
    raw = raw.astype(np.float32)
    norms = np.linalg.norm(raw, axis=1)
    return raw / norms[:, None], norms


def planted_png(concepts: list[str], colour=(40, 200, 60), size: int = 24) -> bytes:
    """A small PNG whose text chunk says which concepts the fake encoder should see in it."""
    meta = PngImagePlugin.PngInfo()
    meta.add_text("concepts", "|".join(concepts))
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()


def install_fake(monkeypatch, concepts) -> FakeEncoder:
    """Make ``ingest.load_encoder`` (what the CLI and the dashboard call) return a fake."""
    from whyclip import ingest

    enc = FakeEncoder(concepts)
    monkeypatch.setattr(ingest, "load_encoder", lambda *args, **kwargs: enc)
    return enc


def opaque_tower(tower):
    """``tower`` behind a module whose insides are not reachable (only pixels in, image
    embeddings out): what a model that cannot be decomposed looks like to the maps."""
    import torch

    class Opaque(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self._inner = [tower]  # hidden from the module tree
            self.anchor = torch.nn.Parameter(torch.zeros(1))  # a parameter, for the device

        def forward(self, pixel_values):
            return self._inner[0](pixel_values=pixel_values)

    return Opaque()


def lively_copy(tiny_model, folder, seed: int):
    """A copy of the tiny model in ``folder`` with every bias and norm parameter random too
    (its own are zeros and ones, under which a misplaced norm or bias, or a term dropped
    from a sum, could go unnoticed)."""
    import shutil

    import torch
    from transformers import CLIPModel

    shutil.copytree(tiny_model, folder)
    clip = CLIPModel.from_pretrained(str(tiny_model))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in clip.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "norm" in name or "layrnorm" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
    clip.save_pretrained(str(folder))
    return folder
