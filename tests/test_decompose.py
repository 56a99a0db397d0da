"""The per-patch decomposition of CLIP's image embedding (ingest/encoder/decompose.py), issue 22:
the patches plus the remainder are the descriptor's S exactly, the remainder summed from its own
terms (not taken as what is left over); and the map against an independent computation from
transformers' own CLIP vision model (its attention weights and value projections), on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.fakes import lively_copy
from whyclip.ingest.encoder.decompose import LAST_LAYERS, decompose
from whyclip.ingest.encoder.vision import image_processor, load_vision_tower


@pytest.fixture(scope="module")
def model(tiny_model, tmp_path_factory):
    """The tiny model with every bias and norm parameter random too (its own are zeros and
    ones, under which a term dropped from the remainder could go unnoticed)."""
    return lively_copy(tiny_model, tmp_path_factory.mktemp("lively") / "tiny", seed=5)


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


def _blank_tower():
    """A one-layer, one-head tower (d = 8, a 4 x 4 grid of 8-pixel patches) whose weights are
    all 0 but the norms' (1) and the class token (features 6 and 7); the planted towers set
    the rest by hand."""
    from whyclip.ingest.encoder.vision import VisionTower

    config = {"hidden_size": 8, "intermediate_size": 8, "num_attention_heads": 1, "num_hidden_layers": 1}
    config |= {"image_size": 32, "patch_size": 8, "projection_dim": 8, "hidden_act": "quick_gelu"}
    tower = VisionTower(config)
    with torch.no_grad():
        for p in tower.parameters():
            p.zero_()
        for name, p in tower.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
        tower.vision_model.embeddings.class_embedding[:] = torch.tensor([0, 0, 0, 0, 0, 0, 1.0, -1.0])
    return tower


def _planted_tower(looks_at: int | None):
    """A one-layer, one-head tower built by hand (d = 8, a 4 x 4 grid of 8-pixel patches):
    a patch's red-minus-green goes to feature 0; the class token's query is a constant, its
    keys are feature 0 (``looks_at`` None: it attends to red patches) or a position feature
    of patch ``looks_at`` only (it attends there whatever the image shows); the value carries
    feature 0 (the control: feature 1, which every patch has) into feature 7 of the class
    token, which the identity projection outputs."""
    tower = _blank_tower()
    with torch.no_grad():
        v = tower.vision_model
        v.embeddings.patch_embedding.weight[0, 0] = 1 / 64
        v.embeddings.patch_embedding.weight[0, 1] = -1 / 64
        pos = v.embeddings.position_embedding.weight
        pos[:, 1], pos[:, 2] = 0.5, -0.5
        if looks_at is not None:
            pos[1 + looks_at, 3] = 3.0
        attn = v.encoder.layers[0].self_attn
        attn.q_proj.bias[0] = 30.0
        attn.k_proj.weight[0, 0 if looks_at is None else 3] = 1.0
        attn.v_proj.weight[0, 0 if looks_at is None else 1] = 1.0  # the control carries a feature every patch has
        attn.out_proj.weight[7, 0] = 1.0
        tower.visual_projection.weight[:] = torch.eye(8)
    return tower.eval()


def _red_at(patch: int) -> torch.Tensor:
    pixels = torch.zeros(1, 3, 32, 32)
    r, c = divmod(patch, 4)
    pixels[0, 0, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] = 2.0
    pixels[0, 1, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] = -1.5
    return pixels


@pytest.mark.parametrize("red", [0, 6, 13])
def test_a_planted_model_lights_up_where_it_looks(red):
    """The map peaks at the red patch when the model attends to red; the control, a model
    that attends to patch 9 whatever the image shows, moves the peak to patch 9 (and away
    from the red patch), because the map shows what the model used."""
    text = np.eye(8)[7:8]  # the direction the attended value is written to
    for looks_at, where in ((None, red), (9, 9)):
        dec = decompose(_planted_tower(looks_at), _red_at(red))
        maps, rest = dec.scores(text, 10.0)
        peak = int(np.argmax(maps[0].reshape(-1)))
        assert peak == where, (looks_at, maps[0])
        others = np.delete(maps[0].reshape(-1), where)
        assert maps[0].reshape(-1)[where] > 5 * np.abs(others).max()
        np.testing.assert_allclose(
            maps.sum() + rest, 10.0 * dec.embedding[7] / np.linalg.norm(dec.embedding), atol=1e-6
        )


@pytest.mark.parametrize("red", [0, 6, 13])
def test_occlusion_finds_the_red_patch_the_model_reads_and_agrees_with_the_map(red):
    """Masking the red patch takes the model's reading away: the occlusion drop peaks there,
    as the map does, and the two rank the cells alike. The control (a model that reads patch
    9's position, not its pixels) loses nothing to any mask: occlusion is flat there while
    the map points at patch 9, and no agreement is claimed."""
    from whyclip.ingest.encoder.decompose import agreement, occlusion

    text = np.eye(8)[7:8]
    pixels = _red_at(red)
    pixels[0, :, 24:32, 0:8] += 0.4  # a faint second cue (patch 12), so the ranks are not all ties
    tower = _planted_tower(None)
    drops = occlusion(tower, pixels, text, 10.0)
    assert drops.shape == (1, 4, 4)
    assert int(np.argmax(drops[0])) == red
    maps, _ = decompose(tower, pixels).scores(text, 10.0)
    (rho,) = agreement(maps, drops)
    assert rho is not None
    assert rho > 0.5
    control = _planted_tower(9)
    flat = occlusion(control, pixels, text, 10.0)
    assert np.abs(flat).max() < 1e-6
    assert agreement(decompose(control, pixels).scores(text, 10.0)[0], flat) == [None]


def test_occlusion_on_a_coarser_grid_pools_the_map(model):
    from whyclip.ingest.encoder.decompose import occlusion, pooled

    tower, processor = load_vision_tower(model), image_processor(model)
    pixels = processor(_images()[0])["pixel_values"]
    texts = _texts(tower.visual_projection.weight.shape[0], 3)
    drops = occlusion(tower, pixels, texts, 14.28, grid=2)
    assert drops.shape == (3, 2, 2)
    maps, _ = decompose(tower, pixels).scores(texts, 14.28)
    np.testing.assert_allclose(pooled(maps, 2).sum(axis=(1, 2)), maps.sum(axis=(1, 2)), atol=1e-9)
    one = occlusion(tower, pixels, texts[:1], 14.28, grid=2)  # one batch serves every descriptor
    np.testing.assert_allclose(one[0], drops[0], atol=1e-6)


def _two_colours(red: int, blue: int) -> torch.Tensor:
    """A red patch and a blue patch (normalised pixels), everything else 0."""
    pixels = torch.zeros(1, 3, 32, 32)
    for patch, channel in ((red, 0), (blue, 2)):
        r, c = divmod(patch, 4)
        pixels[0, channel, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] = 2.0
    return pixels


def _reads(tower, channel: int):
    """The planted tower (reading red: ``None``) made to read ``channel`` of each patch instead."""
    w = tower.vision_model.embeddings.patch_embedding.weight
    with torch.no_grad():
        w[0].zero_()
        w[0, channel] = 1 / 64
    return tower


@pytest.mark.parametrize(("red", "blue"), [(0, 15), (6, 9), (13, 2)])
def test_both_maps_follow_the_region_the_model_reads(red, blue):
    """The same image (a red and a blue patch) under a model that reads red and a control
    that reads blue: the exact map and occlusion both peak at the red patch under the first
    and at the blue one under the control, and agree on each."""
    from whyclip.ingest.encoder.decompose import agreement, occlusion

    text = np.eye(8)[7:8]
    pixels = _two_colours(red, blue)
    pixels[0, :, 0:8, 0:8] += 0.3 if red != 0 and blue != 0 else 0.0  # a faint grey cue, so ranks are not all ties
    for channel, where, elsewhere in ((0, red, blue), (2, blue, red)):
        tower = _reads(_planted_tower(None), channel)
        maps, _ = decompose(tower, pixels).scores(text, 10.0)
        drops = occlusion(tower, pixels, text, 10.0)
        for grid in (maps[0], drops[0]):
            assert int(np.argmax(grid)) == where, (channel, grid)
            assert grid.reshape(-1)[where] > grid.reshape(-1)[elsewhere] + 0.1
        (rho,) = agreement(maps, drops)
        assert rho is not None
        assert rho > 0.5, rho


def _dense_tower(channel: int):
    """A one-layer tower for the dense map: a patch's ``channel`` goes to feature 0, its
    query is feature 0 (so under query-query attention a coloured patch attends to itself),
    its value carries feature 0 into feature 7, and the output bias adds feature 6 to every
    token, so a patch's direction says how much of the colour it holds."""
    tower = _blank_tower()
    with torch.no_grad():
        v = tower.vision_model
        v.embeddings.patch_embedding.weight[0, channel] = 1 / 64
        pos = v.embeddings.position_embedding.weight
        pos[:, 1], pos[:, 2] = 0.5, -0.5
        attn = v.encoder.layers[0].self_attn
        attn.q_proj.weight[0, 0] = 5.0
        attn.v_proj.weight[0, 0] = 1.0
        attn.out_proj.weight[7, 0] = 1.0
        attn.out_proj.bias[6] = 1.0
        tower.visual_projection.weight[:] = torch.eye(8)
    return tower.eval()


@pytest.mark.parametrize(("red", "blue"), [(0, 15), (6, 9)])
def test_the_dense_map_peaks_where_the_patch_holds_what_the_text_reads(red, blue):
    """ClearCLIP's dense map (query-query attention, no residual, no MLP in the last block):
    under a tower reading red it peaks at the red patch, under the control reading blue at
    the blue one; and it is a similarity per patch, not a share of S (it does not add up)."""
    text = np.eye(8)[7:8]
    pixels = _two_colours(red, blue)
    for channel, where in ((0, red), (2, blue)):
        dec = decompose(_dense_tower(channel), pixels, dense=True)
        assert dec.dense is not None
        assert dec.dense.shape == (16, 8)
        dense = dec.dense_scores(text, 10.0)[0].reshape(-1)
        assert int(np.argmax(dense)) == where, (channel, dense)
        assert dense[where] > np.delete(dense, where).max() + 1.0
    maps, rest = dec.scores(text, 10.0)
    s = float(maps.sum() + rest[0])
    assert abs(dense.sum() - s) > 1.0  # the dense map is not a split of S
    with pytest.raises(ValueError, match="without dense=True"):
        decompose(_dense_tower(0), pixels).dense_scores(text, 10.0)


def test_only_a_vit_clip_tower_is_decomposed(model):
    from transformers import CLIPVisionModelWithProjection

    from whyclip.ingest.encoder.decompose import why_not_decomposable

    hf = CLIPVisionModelWithProjection.from_pretrained(str(model)).eval()
    assert why_not_decomposable(load_vision_tower(model)) is None
    assert why_not_decomposable(hf) is None  # transformers' own tower decomposes the same way
    pixels = image_processor(model)(_images()[0])["pixel_values"]
    ours, theirs = decompose(load_vision_tower(model), pixels), decompose(hf, pixels)
    np.testing.assert_allclose(ours.patches, theirs.patches, atol=1e-5)
    assert "not a ViT CLIP vision model" in why_not_decomposable(torch.nn.Linear(2, 2))
    del hf.vision_model.encoder.layers[0].self_attn.q_proj
    assert "no separate query, key, value and output projections" in why_not_decomposable(hf)
