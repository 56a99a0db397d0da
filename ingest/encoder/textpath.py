"""CLIP's text tower with shared prefixes computed once (used by ingest/encoder/clip_encoder.py).

The same computation as transformers' ``CLIPModel.get_text_features`` (token + position
embeddings, pre-norm causal self-attention layers, final layer norm at the pooled position,
text projection), run node by node over the radix tree of :mod:`ingest.prefixes`: a node's
tokens attend to the cached keys and values of every layer of its ancestors, then to their
own earlier tokens. Padded batches, sorted by segment length. Works in the model's dtype
(fp32, or a bf16 copy). It runs on transformers' CLIP text tower or on the plain-torch
one of :mod:`.texttower`, whose modules carry the same names. Architectures it does not know
are refused by :func:`unsupported_reason`, and the encoder then keeps the plain path.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from whyclip.ingest.encoder.prefixes import TreePlan, plan_tree

TOKEN_BUDGET = 2048  # padded tokens per batch (rows x longest segment)
BATCH_COST = 32  # a batch's fixed cost, in padded tokens, when choosing batches


def unsupported_reason(clip) -> str | None:
    """Why the prefix path cannot run ``clip`` (None when it can): transformers' CLIPModel or
    CLIPTextModelWithProjection, or :mod:`.texttower`'s plain tower (checked first: asking
    about transformers' classes imports them, seconds a process)."""
    from whyclip.ingest.encoder.texttower import TextTower

    if not TextTower.holds(clip):
        try:
            from transformers.models.clip.modeling_clip import CLIPModel, CLIPTextModel, CLIPTextModelWithProjection
        except ImportError as exc:  # pragma: no cover - transformers without CLIP
            return f"transformers has no CLIP ({exc})"
        if (
            type(clip) not in (CLIPModel, CLIPTextModelWithProjection)
            or type(getattr(clip, "text_model", None)) is not CLIPTextModel
        ):
            return f"{type(clip).__name__} is not transformers' CLIPModel or CLIPTextModelWithProjection, nor TextTower"
    text = clip.text_model
    if not all(hasattr(x, n) for x, n in ((text, "embeddings"), (text, "encoder"), (text.encoder, "layers"))):
        return "unexpected CLIP text tower layout (no embeddings or encoder layers)"
    needed = [
        (text.embeddings, ("token_embedding", "position_embedding")),
        (text, ("final_layer_norm", "eos_token_id")),
        (clip, ("text_projection",)),
    ]
    for layer in text.encoder.layers:
        needed += [(layer, ("self_attn", "layer_norm1", "layer_norm2", "mlp"))]
        if hasattr(layer, "self_attn"):
            needed += [(layer.self_attn, ("q_proj", "k_proj", "v_proj", "out_proj", "num_heads", "head_dim", "scale"))]
    missing = [f"{type(x).__name__}.{n}" for x, names in needed for n in names if not hasattr(x, n)]
    return f"unexpected CLIP text tower layout (no {missing[0]})" if missing else None


def pooled_position(ids: Sequence[int], eos_token_id: int) -> int:
    """Where ``CLIPTextModel`` pools, as transformers 5 does: the first end token, or, for
    configs with the old ``eos_token_id == 2``, the highest token id (first if repeated);
    position 0 when the end token is missing (transformers assumes it is there)."""
    if eos_token_id == 2:
        return int(np.argmax(ids))
    for i, token in enumerate(ids):
        if token == eos_token_id:
            return i
    return 0


@dataclass
class PassStats:
    """Work of the prefix path, accumulated over calls (bench and -v logs read it)."""

    sequences: int = 0
    plain_tokens: int = 0  # tokens the plain path would compute (sequences up to the pooled token)
    shared_tokens: int = 0  # tokens of shared prefixes, computed once each
    own_tokens: int = 0  # tokens of the suffixes
    shared_s: float = 0.0
    own_s: float = 0.0


class PrefixTextPath:
    """Text vectors (raw projections) from token-id sequences, shared prefixes computed once."""

    def __init__(self, text_model, projection, token_budget: int = TOKEN_BUDGET):
        self.text = text_model
        self.projection = projection
        self.layers = list(self.text.encoder.layers)
        self.eos_token_id = int(self.text.eos_token_id)
        self.max_positions = self.text.embeddings.position_embedding.weight.shape[0]
        self.dtype = self.projection.weight.dtype
        self.device = self.projection.weight.device
        self.token_budget = token_budget
        self.stats = PassStats()
        # q, k and v in one product per layer (one larger matrix product instead of three)
        self._qkv = [
            (
                torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach(),
                torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]).detach(),
            )
            for a in (layer.self_attn for layer in self.layers)
        ]
        self._quick_gelu = getattr(text_model.config, "hidden_act", None) == "quick_gelu"

    @classmethod
    def from_clip(cls, clip, dtype: torch.dtype | None = None) -> PrefixTextPath:
        """The path over ``clip``'s text tower, or over a copy of it in ``dtype`` (the
        image tower is never copied)."""
        text, projection = clip.text_model, clip.text_projection
        if dtype is not None and dtype != projection.weight.dtype:
            text, projection = copy.deepcopy(text).to(dtype), copy.deepcopy(projection).to(dtype)
        return cls(text, projection)

    def embed(self, seqs: Sequence[Sequence[int]]) -> np.ndarray:
        """Raw projected text embeddings (N, dim) float32 of token-id sequences (start and
        end tokens included, at most the model's positions long)."""
        cut = [tuple(s[: pooled_position(s, self.eos_token_id) + 1]) for s in seqs]
        if any(len(s) > self.max_positions for s in cut):
            raise ValueError(f"a sequence is longer than the model's {self.max_positions} positions: truncate it first")
        plan = plan_tree(cut)
        st = self.stats
        st.sequences += len(cut)
        st.plain_tokens += sum(map(len, cut))
        st.shared_tokens += plan.shared_tokens
        st.own_tokens += plan.own_tokens
        pooled = torch.empty((len(cut), self.projection.in_features), dtype=self.dtype, device=self.device)
        with torch.inference_mode():
            self._run(plan, pooled)
            hidden = self.text.final_layer_norm(pooled)
            return self.projection(hidden).float().cpu().numpy()

    def _run(self, plan: TreePlan, pooled: torch.Tensor) -> None:
        """Level by level. The keys and values of a level's inner nodes are kept in one
        padded tensor (layers, 2, nodes, heads, slots, head_dim) with a mask of valid slots:
        a key's position was added to its input, so its slot order does not matter, and a
        child gathers its parent's slots with one index per batch."""
        above: _Level | None = None
        for level in plan.levels:
            inner = [i for i in level if plan.nodes[i].has_children]
            leaves = [i for i in level if not plan.nodes[i].has_children]
            t = time.perf_counter()
            kept = [
                made
                for batch in self._batches(plan, inner)
                if (made := self._forward(plan, batch, above, pooled, keep=True)) is not None  # always, kept
            ]
            t2 = time.perf_counter()
            for batch in self._batches(plan, leaves):
                self._forward(plan, batch, above, pooled, keep=False)
            self.stats.shared_s += t2 - t
            self.stats.own_s += time.perf_counter() - t2
            above = _Level.merge(kept) if kept else None

    def _batches(self, plan: TreePlan, idx: list[int]) -> list[list[int]]:
        """Batches of nodes of similar segment length: the cut points between length
        groups minimise padded tokens plus ``BATCH_COST`` per batch (dynamic programming
        over the distinct lengths), then each batch is split to ``token_budget`` tokens."""
        by_length: dict[int, list[int]] = {}
        for i in idx:
            by_length.setdefault(len(plan.nodes[i].tokens), []).append(i)
        lengths = sorted(by_length)
        counts = [len(by_length[n]) for n in lengths]
        best = [0.0] + [float("inf")] * len(lengths)  # best[j]: cost of lengths[:j]
        cut = [0] * (len(lengths) + 1)
        for j in range(1, len(lengths) + 1):
            rows = 0
            for i in range(j - 1, -1, -1):  # a batch holding lengths[i:j], padded to lengths[j-1]
                rows += counts[i]
                cost = best[i] + BATCH_COST + rows * lengths[j - 1]
                if cost < best[j]:
                    best[j], cut[j] = cost, i
        groups, j = [], len(lengths)
        while j:
            groups.append([n for length in lengths[cut[j] : j] for n in by_length[length]])
            j = cut[j]
        batches = []
        for group in reversed(groups):
            per = max(1, self.token_budget // max(len(plan.nodes[n].tokens) for n in group))
            batches += [group[k : k + per] for k in range(0, len(group), per)]
        return batches

    def _forward(
        self, plan: TreePlan, batch: list[int], above: _Level | None, pooled: torch.Tensor, keep: bool
    ) -> _Level | None:
        nodes = [plan.nodes[i] for i in batch]
        rows, width, dev = len(nodes), max(len(n.tokens) for n in nodes), self.device
        lengths = torch.tensor([len(n.tokens) for n in nodes])
        starts = torch.tensor([n.start for n in nodes])
        ids = torch.zeros((rows, width), dtype=torch.long)
        for r, n in enumerate(nodes):
            ids[r, : len(n.tokens)] = torch.tensor(n.tokens)
        pos = (starts[:, None] + torch.arange(width)[None, :]).clamp(max=self.max_positions - 1)
        emb = self.text.embeddings
        x = emb.token_embedding(ids.to(dev)) + emb.position_embedding(pos.to(dev))
        own_valid = torch.arange(width)[None, :] < lengths[:, None]  # (rows, width)
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        past = past_valid = None
        if above is not None and any(n.start for n in nodes):
            parents = torch.tensor([above.row[n.parent] for n in nodes])
            past, past_valid = above.gather(parents)
            mask = torch.cat(
                [past_valid[:, None, :].expand(rows, width, past_valid.shape[1]), causal.expand(rows, width, width)],
                dim=2,
            )
        else:
            mask = causal.expand(rows, width, width)
        mask = mask[:, None].to(dev)  # (rows, 1, queries, keys): may query i attend key j?
        kept = []
        for li, layer in enumerate(self.layers):
            attn = layer.self_attn
            w, b = self._qkv[li]
            qkv = F.linear(layer.layer_norm1(x), w, b).view(rows, width, 3, attn.num_heads, attn.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (rows, heads, width, head_dim)
            if past is not None:
                k = torch.cat([past[li, 0], k], dim=2)
                v = torch.cat([past[li, 1], v], dim=2)
            if keep:
                kept.append(torch.stack([k, v]))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
            x = x + attn.out_proj(out.transpose(1, 2).reshape(rows, width, -1))
            x = x + self._mlp(layer, layer.layer_norm2(x))
        last = x[torch.arange(rows), lengths - 1]  # the pooled token ends every segment
        for r, n in enumerate(nodes):
            if n.ends:
                pooled[n.ends] = last[r]
        if not keep:
            return None
        valid = own_valid if past_valid is None else torch.cat([past_valid, own_valid], dim=1)
        return _Level(torch.stack(kept), valid, dict(zip(batch, range(rows), strict=True)))

    def _mlp(self, layer, h: torch.Tensor) -> torch.Tensor:
        """``layer.mlp``; CLIP's quick GELU computed in place."""
        if not self._quick_gelu:
            return layer.mlp(h)
        h = layer.mlp.fc1(h)
        return layer.mlp.fc2(h.mul_(torch.sigmoid(h * 1.702)))


@dataclass
class _Level:
    """Keys and values of a level's inner nodes: kv (layers, 2, nodes, heads, slots, head_dim),
    valid (nodes, slots), row: node index -> row."""

    kv: torch.Tensor
    valid: torch.Tensor
    row: dict[int, int]

    @staticmethod
    def merge(parts: list[_Level]) -> _Level:
        if len(parts) == 1:
            return parts[0]
        slots = max(p.kv.shape[4] for p in parts)
        n = sum(p.kv.shape[2] for p in parts)
        first = parts[0].kv
        kv = first.new_zeros((*first.shape[:2], n, first.shape[3], slots, first.shape[5]))
        valid = torch.zeros((n, slots), dtype=torch.bool)
        row, at = {}, 0
        for p in parts:
            size, width = p.kv.shape[2], p.kv.shape[4]
            kv[:, :, at : at + size, :, :width] = p.kv
            valid[at : at + size, :width] = p.valid
            row.update({node: at + r for node, r in p.row.items()})
            at += size
        return _Level(kv, valid, row)

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valid = self.valid[rows]
        used = int(valid.any(dim=0).nonzero().max()) + 1  # trailing slots no row uses are dropped
        return self.kv[:, :, rows, :, :used], valid[:, :used]
