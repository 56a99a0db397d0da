"""CLIP's text tower in plain torch, read from a transformers CLIP folder without importing
transformers' models (used by :mod:`.clipmodel`; the image side is :mod:`.vision`).

Why: an ingest process spent about 1.5 s importing transformers' CLIP modelling for the
text tower alone (and the tokenizer another 0.4 s; see :mod:`.tokenizer`), on top of torch.
The tower is token + position embeddings, pre-norm causal self-attention layers, a final
layer norm read at the pooled position, and a projection: written here and checked
against ``CLIPTextModelWithProjection`` (``tests/test_texttower.py``: the same embeddings,
the same parameter names, the same vectors through the prefix path).

The forward pass does what transformers 5 does with its default (SDPA) attention: no mask
and ``is_causal`` when no row of the batch is padded, else a boolean mask (causal and not
padding); pooling at the first end token, or at the highest id for configs with the old
``eos_token_id == 2`` (:func:`~.textpath.pooled_position`). The prefix-sharing path
(:mod:`.textpath`) reads the modules directly: their names and attributes mirror
transformers' (``text_model.encoder.layers.0.self_attn.q_proj``, ``num_heads``,
``head_dim``, ``scale``, ``text_model.eos_token_id``, ``text_model.config.hidden_act``), so
parameter names are the checkpoint's.

Only what is known is taken: a text config with keys that could change the computation,
an activation other than quick GELU or GELU, or weights that are not safetensors send the
folder to transformers (:func:`unsupported_reason` says why).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from whyclip.ingest.encoder.vision import (
    ACTIVATIONS,
    VISION_INERT,
    _Mlp,
    _Table,
    _weight_files,
    layer_keys,
    read_tensors,
)

# text config keys this module computes with (defaults: transformers' CLIPTextConfig)
TEXT_DEFAULTS = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "projection_dim": 512,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "eos_token_id": 49407,
}
# keys that do not change an inference forward pass (token ids other than the end token,
# dropout, initialisation, and what older transformers wrote of generation and output settings)
TEXT_INERT = VISION_INERT | {
    "bos_token_id",
    "pad_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "torchscript",
    "use_bfloat16",
    "tf_legacy_loss",
    "pruned_heads",
    "tie_word_embeddings",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "is_decoder",
    "cross_attention_hidden_size",
    "add_cross_attention",
    "tie_encoder_decoder",
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "finetuning_task",
    "tokenizer_class",
    "prefix",
    "task_specific_params",
    "problem_type",
    "gradient_checkpointing",
}


@dataclass(frozen=True)
class TextConfig:
    """The text config the tower is built from (what ``CLIPTextConfig`` would hold)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    projection_dim: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int
    hidden_act: str
    layer_norm_eps: float
    eos_token_id: int


def _raw_text_config(folder: Path) -> tuple[dict, dict]:
    config = json.loads((Path(folder) / "config.json").read_text())
    return config, dict(config.get("text_config") or {})


def text_config(folder: Path) -> TextConfig:
    _, text = _raw_text_config(folder)
    v = {k: text.get(k, default) for k, default in TEXT_DEFAULTS.items()}
    return TextConfig(
        vocab_size=int(v["vocab_size"]),
        hidden_size=int(v["hidden_size"]),
        intermediate_size=int(v["intermediate_size"]),
        projection_dim=int(v["projection_dim"]),
        num_hidden_layers=int(v["num_hidden_layers"]),
        num_attention_heads=int(v["num_attention_heads"]),
        max_position_embeddings=int(v["max_position_embeddings"]),
        hidden_act=str(v["hidden_act"]),
        layer_norm_eps=float(v["layer_norm_eps"]),
        eos_token_id=int(v["eos_token_id"]),
    )


def _names(layers: int) -> list[str]:
    """The checkpoint keys of the text tower."""
    out = [
        "text_model.embeddings.token_embedding.weight",
        "text_model.embeddings.position_embedding.weight",
        "text_model.final_layer_norm.weight",
        "text_model.final_layer_norm.bias",
        "text_projection.weight",
    ]
    for i in range(layers):
        out += layer_keys(f"text_model.encoder.layers.{i}.")
    return out


def unsupported_reason(folder: Path) -> str | None:
    """Why this module cannot compute ``folder``'s text tower exactly as transformers does
    (None when it can)."""
    try:
        config, text = _raw_text_config(folder)
        files = _weight_files(Path(folder))
    except (OSError, ValueError) as exc:
        return f"unreadable model folder ({exc})"
    if config.get("text_config_dict"):
        return "config has the old text_config_dict"
    unknown = sorted(set(text) - set(TEXT_DEFAULTS) - TEXT_INERT)
    if unknown:
        return f"text config keys {unknown}"
    act = text.get("hidden_act", TEXT_DEFAULTS["hidden_act"])
    if act not in ACTIVATIONS:
        return f"activation {act!r}"
    try:
        c = text_config(folder)
    except (TypeError, ValueError) as exc:
        return f"text config ({exc})"
    if c.num_attention_heads <= 0 or c.hidden_size % c.num_attention_heads:
        return f"{c.num_attention_heads} heads do not divide width {c.hidden_size}"
    if files is None:
        return "weights are not safetensors"
    missing = [k for k in _names(c.num_hidden_layers) if k not in files]
    if missing:
        return f"no {missing[0]} in the weights"
    return None


# -- the tower -------------------------------------------------------------------------------


class _Embedding(_Table):
    """A lookup table (``nn.Embedding``'s forward, without its initialisation)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim**-0.5
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        shape = (*x.shape[:-1], -1, self.head_dim)
        q, k, v = (p(x).view(shape).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=self.scale, is_causal=mask is None and x.shape[1] > 1
        )
        return self.out_proj(out.transpose(1, 2).contiguous().reshape(*x.shape[:-1], -1).contiguous())


class _Layer(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        dim = c.hidden_size
        self.self_attn = _Attention(dim, c.num_attention_heads)
        self.layer_norm1 = nn.LayerNorm(dim, eps=c.layer_norm_eps)
        self.mlp = _Mlp(dim, c.intermediate_size, ACTIVATIONS[c.hidden_act])
        self.layer_norm2 = nn.LayerNorm(dim, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class _Embeddings(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.token_embedding = _Embedding(c.vocab_size, c.hidden_size)
        self.position_embedding = _Embedding(c.max_position_embeddings, c.hidden_size)


class _Encoder(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.layers = nn.ModuleList([_Layer(c) for _ in range(c.num_hidden_layers)])


class _TextModel(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.config = c
        self.embeddings = _Embeddings(c)
        self.encoder = _Encoder(c)
        self.final_layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.eos_token_id = c.eos_token_id


@dataclass
class TextOutput:
    text_embeds: torch.Tensor


class TextTower(nn.Module):
    """``CLIPTextModelWithProjection``'s computation, module for module."""

    def __init__(self, config: TextConfig):
        super().__init__()
        self.text_model = _TextModel(config)
        self.text_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)

    @staticmethod
    def holds(model) -> bool:
        """Whether ``model`` is this module's tower, text model and all (the prefix path's check)."""
        return type(model) is TextTower and type(getattr(model, "text_model", None)) is _TextModel

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TextOutput:
        t = self.text_model
        rows, width = input_ids.shape
        if width > t.embeddings.position_embedding.weight.shape[0]:
            raise ValueError(f"sequences of {width} tokens are longer than the model's positions")
        x = t.embeddings.token_embedding(input_ids) + t.embeddings.position_embedding(
            torch.arange(width, device=input_ids.device)[None]
        )
        mask = None  # no padding: SDPA's own causal mask, as transformers asks for it
        if attention_mask is not None and not bool(attention_mask.all()):
            causal = torch.ones((width, width), dtype=torch.bool, device=input_ids.device).tril()
            mask = (causal[None] & attention_mask.bool()[:, None, :])[:, None]  # (rows, 1, queries, keys)
        for layer in t.encoder.layers:
            x = layer(x, mask)
        x = t.final_layer_norm(x)
        ids = input_ids.to(torch.int)
        at = ids.argmax(dim=-1) if t.eos_token_id == 2 else (ids == t.eos_token_id).int().argmax(dim=-1)
        return TextOutput(self.text_projection(x[torch.arange(rows, device=x.device), at]))


def load_text_tower(folder: Path) -> TextTower:
    """The text tower of ``folder`` in float32 (built on the meta device, then given the
    checkpoint's tensors: no random initialisation)."""

    folder = Path(folder)
    config = text_config(folder)
    files = _weight_files(folder)
    if files is None:  # unsupported_reason says so first
        raise ValueError(f"{folder}: the text tower's weights are not safetensors")
    with torch.device("meta"):
        tower = TextTower(config)
    tower.load_state_dict(read_tensors(files, _names(config.num_hidden_layers)), strict=True, assign=True)
    return tower.eval()
