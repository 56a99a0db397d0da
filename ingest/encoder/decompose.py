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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from whyclip.ingest.encoder.vision import VisionTower

#: how many of the last attention layers the map is made of (the rest is the remainder)
LAST_LAYERS = 4


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

    def scores(self, texts: np.ndarray, logit_scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Per descriptor (rows of unit ``texts``, (n, dim)): its map, (n, grid_h, grid_w),
        and its remainder, (n,), both in S (similarity x ``logit_scale``); map plus
        remainder is the descriptor's S for this image."""
        texts = np.asarray(texts, dtype=np.float64)
        k = logit_scale / float(np.linalg.norm(self.embedding.astype(np.float64)))
        maps = (self.patches.astype(np.float64) @ texts.T).T * k
        rest = (texts @ self.rest.astype(np.float64)) * k
        return maps.reshape(len(texts), *self.grid), rest


@torch.no_grad()
def decompose(tower: VisionTower, pixels: torch.Tensor, layers: int = LAST_LAYERS) -> Decomposition:
    """The tower's forward pass on one image (``pixels`` (1, 3, H, W)), keeping the class
    token's attention terms of the last ``layers`` layers per image location."""
    if pixels.shape[0] != 1:
        raise ValueError(f"decompose takes one image, got {pixels.shape[0]}")
    v = tower.vision_model
    blocks: list[Any] = list(v.encoder.layers)  # vision._Layer each
    n_layers = len(blocks)
    layers = max(1, min(int(layers), n_layers))
    x = v.pre_layrnorm(v.embeddings(pixels.to(torch.float32)))  # (1, T, d)
    t, d = x.shape[1], x.shape[2]
    per_location = torch.zeros(t, d, dtype=torch.float64)  # the class token's attention terms, by location
    other = x[0, 0].to(torch.float64)  # every other term of the class token's stream, summed on its own
    for i, layer in enumerate(blocks):
        if i < n_layers - layers:
            before = x[0, 0].to(torch.float64)
            x = layer(x)
            other += x[0, 0].to(torch.float64) - before  # this layer's attention and MLP outputs
            continue
        attn = layer.self_attn
        h = layer.layer_norm1(x)
        heads, hd = attn.heads, d // attn.heads
        q, k, val = (p(h).view(1, t, heads, hd).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        weights = torch.softmax((q @ k.transpose(-1, -2)) * hd**-0.5, dim=-1)  # (1, heads, T, T)
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
        patches=patch_terms.numpy(),
        rest=rest.numpy(),
        embedding=own.numpy(),
        grid=(side, (t - 1) // side),
        layers=layers,
    )


@torch.no_grad()
def occlusion(
    tower: VisionTower,
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
    ``grid`` defaults to the patch grid (7 x 7 for ViT-B/32)."""
    if pixels.shape[0] != 1:
        raise ValueError(f"occlusion takes one image, got {pixels.shape[0]}")
    h, w = pixels.shape[-2:]
    if grid is None:
        v = tower.vision_model.embeddings
        grid = h // int(v.patch_embedding.kernel_size[0])
    grid = max(1, min(int(grid), h, w))
    rows = np.linspace(0, h, grid + 1).round().astype(int)
    cols = np.linspace(0, w, grid + 1).round().astype(int)
    masked = pixels.repeat(grid * grid, 1, 1, 1).to(torch.float32)
    for r in range(grid):
        for c in range(grid):
            masked[r * grid + c, :, rows[r] : rows[r + 1], cols[c] : cols[c + 1]] = 0.0
    texts = np.asarray(texts, dtype=np.float64)

    def s_of(batch: torch.Tensor) -> np.ndarray:
        e = tower(batch).image_embeds.to(torch.float64).numpy()
        return logit_scale * (e / np.linalg.norm(e, axis=1, keepdims=True)) @ texts.T  # (b, n)

    base = s_of(pixels.to(torch.float32))[0]
    after = np.concatenate([s_of(masked[i : i + chunk]) for i in range(0, len(masked), chunk)])
    return (base[None, :] - after).T.reshape(len(texts), grid, grid)


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
