"""Where in the image: CLIP's image embedding split exactly into per-patch terms.

Following Gandelsman, Efros & Steinhardt (ICLR 2024, "Interpreting CLIP's Image
Representation via Text-Based Decomposition"), the class token's residual stream at the
last layer is a sum: the pre-norm embedding, plus each layer's attention output, plus each
layer's MLP output. An attention output at the class token is itself a sum over heads ``h``
and image locations ``j``: ``a_h(0, j) W_O^h v_h(j)`` (plus the output bias). The final
LayerNorm is linear once its scale ``sigma`` is the one of this forward pass, and the
projection is linear, so the image embedding ``e`` is a sum of terms, one per (layer, head,
location) and a rest. A descriptor's similarity ``S = scale x (e . t) / |e|`` splits the
same way: the map is the last ``layers`` layers' attention terms of each patch, summed over
heads and layers, and the *remainder* is everything else (earlier layers, the MLPs, the
class token's attention to itself, the biases). The patches plus the remainder equal S
exactly, up to float rounding: the map explains the computation, not a story about it.

``layers`` defaults to :data:`LAST_LAYERS` (4): Gandelsman et al. find that the last four
attention layers carry nearly all of ViT-L/14's zero-shot accuracy (mean-ablating the
earlier layers and every MLP costs little). For ViT-B models the share is lower, so the
remainder is reported beside every map.

A sharper, easier-to-read map that does *not* add up to S is the dense one of ClearCLIP (Lan
et al., ECCV 2024): the last block without its residual connection and MLP, with
query-query attention, applied to every patch token; each patch's output through the final
norm and projection is compared with the text like an image embedding. It is labelled as not
adding up wherever it is shown.

The towers decomposed are :class:`whyclip.ingest.encoder.vision.VisionTower` and transformers'
CLIP vision models (the same module names); :func:`why_not_decomposable` says when a tower
is neither, and then only occlusion (which needs nothing from the insides) is offered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from whyclip.ingest.encoder.vision import VisionTower

#: how many of the last attention layers the map is made of (the rest is the remainder)
LAST_LAYERS = 4
#: the occlusion check's grid side at most (its cost: one image encode per cell)
OCCLUSION_GRID = 7


@dataclass(frozen=True)
class Decomposition:
    """One image's embedding as per-patch terms plus a rest, before normalisation.

    ``patches`` is (grid_h x grid_w, dim): each patch's terms from the last ``layers``
    attention layers, summed over heads; ``rest`` (dim,) is every other term; ``embedding``
    (dim,) is the tower's own output, which ``patches.sum(0) + rest`` equals up to float
    rounding.
    """

    patches: np.ndarray
    rest: np.ndarray
    embedding: np.ndarray
    grid: tuple[int, int]
    layers: int
    dense: np.ndarray | None = None  # (grid_h x grid_w, dim): ClearCLIP's patch embeddings, when asked for

    def scores(self, texts: np.ndarray, logit_scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Per descriptor (rows of unit ``texts``, (n, dim)): its map, (n, grid_h, grid_w),
        and its remainder, (n,), both in S (similarity x ``logit_scale``); map plus
        remainder is the descriptor's S for this image."""
        texts = np.asarray(texts, dtype=np.float64)
        k = logit_scale / float(np.linalg.norm(self.embedding.astype(np.float64)))
        maps = (self.patches.astype(np.float64) @ texts.T).T * k
        rest = (texts @ self.rest.astype(np.float64)) * k
        return maps.reshape(len(texts), *self.grid), rest

    def dense_scores(self, texts: np.ndarray, logit_scale: float) -> np.ndarray:
        """Per descriptor, the dense map (n, grid_h, grid_w): each patch's ClearCLIP embedding's
        cosine with the text, times ``logit_scale``; it does not add up to S."""
        if self.dense is None:
            raise ValueError("this decomposition was made without dense=True")
        d = self.dense.astype(np.float64)
        unit = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        texts = np.asarray(texts, dtype=np.float64)
        return (logit_scale * unit @ texts.T).T.reshape(len(texts), *self.grid)


def _heads(attn: Any) -> int:
    """The attention's head count (whyclip's tower: ``heads``; transformers': ``num_heads``)."""
    return int(getattr(attn, "heads", None) or attn.num_heads)


def why_not_decomposable(tower: Any) -> str | None:
    """None when ``tower`` has the insides :func:`decompose` reads (a ViT CLIP image tower
    with per-layer query, key, value and output projections); else the reason, in a phrase."""
    v = getattr(tower, "vision_model", None)
    if v is None or getattr(tower, "visual_projection", None) is None:
        return f"its image tower ({type(tower).__name__}) is not a ViT CLIP vision model with a projection"
    for part in ("embeddings", "pre_layrnorm", "encoder", "post_layernorm"):
        if getattr(v, part, None) is None:
            return f"its image tower has no {part}"
    for i, layer in enumerate(getattr(v.encoder, "layers", None) or []):
        attn = getattr(layer, "self_attn", None)
        needed = ("q_proj", "k_proj", "v_proj", "out_proj")
        if attn is None or any(getattr(attn, n, None) is None for n in needed):
            return f"layer {i} of its image tower has no separate query, key, value and output projections"
        if getattr(attn, "heads", None) is None and getattr(attn, "num_heads", None) is None:
            return f"layer {i} of its image tower does not say its head count"
        if any(getattr(layer, n, None) is None for n in ("layer_norm1", "layer_norm2", "mlp")):
            return f"layer {i} of its image tower is not a pre-norm transformer block"
    if not list(getattr(v.encoder, "layers", None) or []):
        return "its image tower has no transformer layers"
    return None


@torch.inference_mode()
def decompose(
    tower: VisionTower | Any, pixels: torch.Tensor, layers: int = LAST_LAYERS, dense: bool = False
) -> Decomposition:
    """The tower's forward pass on one image (``pixels`` (1, 3, H, W)), keeping the class
    token's attention terms of the last ``layers`` layers per image location; with ``dense``,
    also ClearCLIP's per-patch embeddings from the last block (see the module's text)."""
    if pixels.shape[0] != 1:
        raise ValueError(f"decompose takes one image, got {pixels.shape[0]}")
    v = tower.vision_model
    blocks: list[Any] = list(v.encoder.layers)  # vision._Layer each
    n_layers = len(blocks)
    layers = max(1, min(int(layers), n_layers))
    device = next(tower.parameters()).device
    x = v.pre_layrnorm(v.embeddings(pixels.to(device, torch.float32)))  # (1, T, d)
    t, d = x.shape[1], x.shape[2]
    dense_vectors: torch.Tensor | None = None
    # the class token's attention terms, by location
    per_location = torch.zeros(t, d, dtype=torch.float64, device=device)
    other = x[0, 0].to(torch.float64)  # every other term of the class token's stream, summed on its own
    for i, layer in enumerate(blocks):
        if i < n_layers - layers:
            before = x[0, 0].to(torch.float64)
            x = layer(x)
            other += x[0, 0].to(torch.float64) - before  # this layer's attention and MLP outputs
            continue
        attn = layer.self_attn
        h = layer.layer_norm1(x)
        heads = _heads(attn)
        hd = d // heads
        q, k, val = (p(h).view(1, t, heads, hd).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        weights = torch.softmax((q @ k.transpose(-1, -2)) * hd**-0.5, dim=-1)  # (1, heads, T, T)
        if dense and i == n_layers - 1:  # ClearCLIP: query-query attention, no residual, no MLP
            qq = torch.softmax((q @ q.transpose(-1, -2)) * hd**-0.5, dim=-1)
            patch_out = attn.out_proj((qq @ val).transpose(1, 2).reshape(1, t, d))[0, 1:]
            dense_vectors = tower.visual_projection(v.post_layernorm(patch_out)).to(torch.float64)
        mixed = (weights @ val).transpose(1, 2).reshape(1, t, d)
        out = attn.out_proj(mixed)
        # the class token's output, split by location j: sum over heads of W_O^h a_h(0, j) v_h(j)
        w_o = attn.out_proj.weight.view(d, heads, hd)  # (d, heads, hd)
        terms = torch.einsum("hj,hjc,dhc->jd", weights[0, :, 0, :], val[0], w_o)
        per_location += terms.to(torch.float64)
        other += attn.out_proj.bias.to(torch.float64)
        x = x + out
        mlp = layer.mlp(layer.layer_norm2(x))
        other += mlp[0, 0].to(torch.float64)
        x = x + mlp
    other += per_location[0]  # the class token's attention to itself: not an image location
    ln = v.post_layernorm
    cls = x[0, 0].to(torch.float64)
    sigma = torch.sqrt(cls.var(unbiased=False) + ln.eps)
    gamma = ln.weight.to(torch.float64)
    proj = tower.visual_projection.weight.to(torch.float64)  # (dim, d)

    def through_norm(terms: torch.Tensor) -> torch.Tensor:
        """A sum's terms through the final LayerNorm (with this pass's sigma) and the projection."""
        centred = terms - terms.mean(dim=-1, keepdim=True)
        return (centred * gamma / sigma) @ proj.T

    patch_terms = through_norm(per_location[1:])
    rest = through_norm(other[None])[0] + proj @ ln.bias.to(torch.float64)
    own = tower.visual_projection(ln(x[:, 0]))[0].to(torch.float64)
    side = round((t - 1) ** 0.5)
    return Decomposition(
        patches=patch_terms.cpu().numpy(),
        rest=rest.cpu().numpy(),
        embedding=own.cpu().numpy(),
        grid=(side, (t - 1) // side),
        layers=layers,
        dense=None if dense_vectors is None else dense_vectors.cpu().numpy(),
    )


@torch.inference_mode()
def image_embeds(tower: Any, pixels: torch.Tensor) -> torch.Tensor:
    """The raw image embeddings (B, dim) of any CLIP image tower: whyclip's, transformers'
    ``CLIPVisionModelWithProjection``, or a whole ``CLIPModel``."""
    device = next(tower.parameters()).device
    pixels = pixels.to(device, torch.float32)
    if hasattr(tower, "get_image_features"):
        out = tower.get_image_features(pixel_values=pixels)
        return getattr(out, "pooler_output", out)  # transformers 5 may wrap the features
    return tower(pixel_values=pixels).image_embeds


def patch_grid(tower: Any, pixels: torch.Tensor) -> int | None:
    """The tower's patch grid side for these pixels, when its patch embedding says it."""
    conv = getattr(getattr(getattr(tower, "vision_model", None), "embeddings", None), "patch_embedding", None)
    size = getattr(conv, "kernel_size", None)
    return int(pixels.shape[-2]) // int(size[0]) if size else None


def occlusion(
    tower: Any,
    pixels: torch.Tensor,
    texts: np.ndarray,
    logit_scale: float,
    grid: int | None = None,
    chunk: int = 16,
) -> np.ndarray:
    """The independent check: per descriptor (rows of unit ``texts``), how much its S falls
    when each cell of a ``grid`` x ``grid`` grid is set to 0 (in normalised pixels: the
    dataset's mean colour) and the image encoded again; (n, grid, grid). It needs nothing
    from the model's insides; one batch of masked images serves every descriptor.
    ``grid`` defaults to the patch grid, at most :data:`OCCLUSION_GRID` (7 x 7: ViT-B/32's
    patch grid; 49 encodes)."""
    return occlusion_scores(tower, pixels, texts, logit_scale, grid, chunk)[1]


@torch.inference_mode()
def occlusion_scores(
    tower: Any,
    pixels: torch.Tensor,
    texts: np.ndarray,
    logit_scale: float,
    grid: int | None = None,
    chunk: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`occlusion`'s drops, (n, grid, grid), with each descriptor's S on the whole
    image, (n,), from the same unmasked pass."""
    if pixels.shape[0] != 1:
        raise ValueError(f"occlusion takes one image, got {pixels.shape[0]}")
    h, w = pixels.shape[-2:]
    if grid is None:
        grid = min(patch_grid(tower, pixels) or OCCLUSION_GRID, OCCLUSION_GRID)
    grid = max(1, min(int(grid), h, w))
    rows = np.linspace(0, h, grid + 1).round().astype(int)
    cols = np.linspace(0, w, grid + 1).round().astype(int)
    texts = np.asarray(texts, dtype=np.float64)

    def s_of(batch: torch.Tensor) -> np.ndarray:
        e = image_embeds(tower, batch).to(torch.float64).cpu().numpy()
        return logit_scale * (e / np.linalg.norm(e, axis=1, keepdims=True)) @ texts.T  # (b, n)

    base = s_of(pixels.to(torch.float32))[0]
    cells = [(r, c) for r in range(grid) for c in range(grid)]
    after = []
    for start in range(0, len(cells), chunk):  # at most ``chunk`` masked copies held at once
        part = cells[start : start + chunk]
        masked = pixels.to(torch.float32).repeat(len(part), 1, 1, 1)
        for i, (r, c) in enumerate(part):
            masked[i, :, rows[r] : rows[r + 1], cols[c] : cols[c + 1]] = 0.0
        after.append(s_of(masked))
    return base, (base[None, :] - np.concatenate(after)).T.reshape(len(texts), grid, grid)


def pooled(maps: np.ndarray, grid: int) -> np.ndarray:
    """Maps (n, gh, gw) summed into a ``grid`` x ``grid`` grid of cells (as occlusion masks
    them), so the two can be compared cell by cell."""
    n, gh, gw = maps.shape
    rows = np.linspace(0, gh, grid + 1).round().astype(int)
    cols = np.linspace(0, gw, grid + 1).round().astype(int)
    out = np.zeros((n, grid, grid))
    for r in range(grid):
        for c in range(grid):
            out[:, r, c] = maps[:, rows[r] : rows[r + 1], cols[c] : cols[c + 1]].sum(axis=(1, 2))
    return out


def agreement(maps: np.ndarray, drops: np.ndarray) -> list[float | None]:
    """Per descriptor: Spearman's rank correlation between its decomposition map (pooled to
    the occlusion grid) and its occlusion drops; None where either is constant (no ranking)."""
    from scipy.stats import spearmanr

    grid = drops.shape[-1]
    cells = pooled(maps, grid).reshape(len(maps), -1)
    out: list[float | None] = []
    for a, b in zip(cells, drops.reshape(len(drops), -1), strict=True):
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            out.append(None)
        else:
            out.append(float(spearmanr(a, b).statistic))
    return out


class MapModel:
    """What maps need from an encoder: its image tower in fp32 (maps decompose the fp32 pass
    whatever precision explain runs in) and the image processor, with the way back from
    pixel values to the picture the model saw. ``reason`` is None when the tower can be
    decomposed, else why not (then only occlusion is offered)."""

    def __init__(self, tower: Any, processor: Any):
        self.tower = tower
        self.processor = processor
        self.reason = why_not_decomposable(tower)

    def pixels(self, picture: Any) -> torch.Tensor:
        """One PIL picture's pixel values, (1, 3, H, W) float32."""
        return self.processor(images=[picture], return_tensors="pt")["pixel_values"].to(torch.float32)

    def view(self, pixels: torch.Tensor) -> np.ndarray:
        """The picture the model saw (after resizing and cropping), (H, W, 3) uint8, from one
        image's pixel values: the processor's normalisation undone."""
        p = self.processor
        x = pixels[0].detach().to(torch.float64).cpu().numpy()
        mean = getattr(p, "image_mean", None) if hasattr(p, "image_mean") else getattr(p, "mean", None)
        std = getattr(p, "image_std", None) if hasattr(p, "image_std") else getattr(p, "std", None)
        if mean is not None and std is not None and getattr(p, "do_normalize", True):
            x = x * np.asarray(std, dtype=np.float64)[:, None, None] + np.asarray(mean, dtype=np.float64)[:, None, None]
        rescale = getattr(p, "rescale_factor", 1 / 255)
        if rescale is None or getattr(p, "do_rescale", True) is False:
            rescale = 1.0  # the processor kept 0..255
        x = np.clip(np.round(x / rescale), 0, 255).astype(np.uint8)
        if x.shape[0] == 1:
            x = np.repeat(x, 3, axis=0)
        return np.ascontiguousarray(np.moveaxis(x[:3], 0, -1))
