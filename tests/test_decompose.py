"""The per-patch decomposition of CLIP's image embedding (ingest/encoder/decompose.py), issue 22:
the patches plus the remainder are the descriptor's S exactly, the remainder summed from its own
terms (not taken as what is left over); and the map against an independent computation from
transformers' own CLIP vision model (its attention weights and value projections), on the tiny model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from whyclip.ingest.encoder.decompose import LAST_LAYERS, decompose
from whyclip.ingest.encoder.vision import image_processor, load_vision_tower


@pytest.fixture(scope="module")
def model(tiny_model, tmp_path_factory):
    """The tiny model with every bias and norm parameter random too (its own are zeros and
    ones, under which a term dropped from the remainder could go unnoticed)."""
    from transformers import CLIPModel

    folder = tmp_path_factory.mktemp("lively") / "tiny"
    shutil.copytree(tiny_model, folder)
    clip = CLIPModel.from_pretrained(str(tiny_model))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in clip.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "norm" in name or "layrnorm" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
    clip.save_pretrained(str(folder))
    return folder


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    out = [
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in [(100, 120), (64, 64), (300, 90)]
    ]
    flat = Image.new("RGB", (80, 80), (30, 180, 40))
    flat.paste((220, 30, 30), (10, 10, 40, 40))
    return [*out, flat]


def _texts(dim: int, n: int = 5) -> np.ndarray:
    t = np.random.default_rng(8).standard_normal((n, dim))
    return t / np.linalg.norm(t, axis=1, keepdims=True)


@pytest.mark.parametrize("layers", [1, 2, LAST_LAYERS])
def test_patches_plus_remainder_are_s_exactly(model, layers):
    tower, processor = load_vision_tower(model), image_processor(model)
    from whyclip.ingest import load_encoder

    encoder = load_encoder(str(model), precision="fp32")  # the map decomposes the fp32 pass
    scale = 14.28
    for image in _images():
        pixels = processor(image)["pixel_values"]
        dec = decompose(tower, pixels, layers)
        # the rest is summed from its own terms: the identity below can fail
        np.testing.assert_allclose(dec.patches.sum(0) + dec.rest, dec.embedding, rtol=0, atol=2e-6)
        units, norms = encoder.embed_images([image])  # the vector whyclip stores and scores with
        unit = units[0].astype(np.float64)
        np.testing.assert_allclose(dec.embedding / np.linalg.norm(dec.embedding), unit, atol=2e-6)
        assert np.linalg.norm(dec.embedding) == pytest.approx(float(norms[0]), rel=1e-5)
        texts = _texts(len(unit))
        maps, rest = dec.scores(texts, scale)
        assert maps.shape == (len(texts), *dec.grid)
        np.testing.assert_allclose(maps.sum(axis=(1, 2)) + rest, scale * texts @ unit, atol=2e-5)
        assert np.abs(maps).max() > 1e-4  # a map that is all zeros would pass the sum trivially


def test_the_map_equals_transformers_attention_terms(model):
    """Recomputed from transformers' CLIPVisionModelWithProjection (eager attention, its
    attention weights, its value projection and its modules): each patch's terms of the last
    layers, through the final norm (this pass's sigma) and the projection."""
    from transformers import CLIPVisionModelWithProjection

    hf = CLIPVisionModelWithProjection.from_pretrained(str(model), attn_implementation="eager").eval()
    tower, processor = load_vision_tower(model), image_processor(model)
    n_layers = len(hf.vision_model.encoder.layers)
    for layers in (1, n_layers):
        for image in _images():
            pixels = processor(image)["pixel_values"]
            with torch.no_grad():
                out = hf(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
                vm = hf.vision_model
                terms = 0
                for i in range(n_layers - layers, n_layers):
                    layer = vm.encoder.layers[i]
                    attn = layer.self_attn
                    value = attn.v_proj(layer.layer_norm1(out.hidden_states[i]))[0]  # (T, d)
                    t, d = value.shape
                    heads = attn.num_heads
                    a = out.attentions[i][0, :, 0, :]  # (heads, T): the class token's row
                    per = torch.zeros(t, d)
                    for h in range(heads):
                        sl = slice(h * d // heads, (h + 1) * d // heads)
                        per += a[h][:, None] * (value[:, sl] @ attn.out_proj.weight[:, sl].T)
                    terms = terms + per
                final = out.last_hidden_state[0, 0]  # the encoder's output, before the final norm
                norm = vm.post_layernorm
                sigma = torch.sqrt(final.var(unbiased=False) + norm.eps)
                patches = terms[1:]
                expected = (
                    (patches - patches.mean(-1, keepdim=True)) * norm.weight / sigma
                ) @ hf.visual_projection.weight.T
            got = decompose(tower, pixels, layers)
            np.testing.assert_allclose(got.patches, expected.numpy(), atol=2e-5)
            np.testing.assert_allclose(got.embedding, out.image_embeds[0].numpy(), atol=2e-5)


def test_one_image_at_a_time(model):
    tower, processor = load_vision_tower(model), image_processor(model)
    pixels = processor(_images()[:2])["pixel_values"]
    with pytest.raises(ValueError, match="one image"):
        decompose(tower, pixels)
