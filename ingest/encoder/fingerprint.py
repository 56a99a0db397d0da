"""Encoder identity from content: what a CLIP model computes, never where it was loaded from.

An encoder id is ``clip-<dim>-w2-<hash>``: the hash of the architecture (the config keys
that determine the computation) and of every weight (name, shape and a sample of values).
Copying or moving a model folder, moving the Hugging Face cache or upgrading transformers
leaves it unchanged; other weights give another id.

Ids made before (``clip-<dim>-<hash>``, :func:`legacy_fingerprint`) hashed the whole
config, which carries the load path and the transformers version: :func:`is_legacy_id`
recognises them so a store holding them can be mapped to the new id (see
:mod:`whyclip.ingest.encoder.legacy_ids`). Nothing here imports torch: it reads tensors it is given.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np

ID_VERSION = "w2"  # the marker that tells a content id from a legacy (path-dependent) one
SAMPLE = 64  # values hashed from the start, the middle (strided) and the end of each tensor
_LEGACY = re.compile(r"^clip-\d+-[0-9a-f]{16}$")

# The config keys that determine what CLIP computes, per part. A whitelist, not a list of
# keys to drop: every transformers release adds or renames incidental keys (``dtype``
# replaced ``torch_dtype``, ``_attn_implementation``, output flags, label maps), and a
# blacklist would change every id on each such upgrade although the vectors stay the same.
# The risk of a whitelist, a new key that does change the computation, is bounded: every
# structural change (layers, widths, vocabulary, patches) also changes the weights' names
# or shapes, which are hashed; the keys below are those that change the vectors without
# changing any shape (activation, norm epsilon, the end token the text tower pools at).
TOP_KEYS = ("model_type", "projection_dim")
TOWER_KEYS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_hidden_layers",
    "hidden_act",
    "layer_norm_eps",
    "projection_dim",
)
TEXT_KEYS = ("max_position_embeddings", "vocab_size", "eos_token_id")
VISION_KEYS = ("image_size", "patch_size", "num_channels")


def architecture(config) -> dict:
    """The computation-determining part of a transformers CLIP config, as plain data."""

    def pick(cfg, keys) -> dict:
        return {k: _plain(getattr(cfg, k, None)) for k in keys}

    out = pick(config, TOP_KEYS)
    for part, extra in (("text_config", TEXT_KEYS), ("vision_config", VISION_KEYS)):
        sub = getattr(config, part, None)
        out[part] = pick(sub, TOWER_KEYS + extra) if sub is not None else None
    return out


def _plain(value):
    """A config value as JSON-stable data (floats by repr, so 1e-05 stays 1e-05)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _hash_tensor(h, name: str, tensor) -> None:
    flat = tensor.detach().reshape(-1)
    h.update(name.encode())
    h.update(str(tuple(tensor.shape)).encode())
    step = max(1, flat.shape[0] // SAMPLE)
    for part in (flat[:SAMPLE], flat[::step][:SAMPLE], flat[-SAMPLE:]):  # convert only the samples
        h.update(np.ascontiguousarray(part.float().cpu().numpy()).tobytes())


def content_fingerprint(clip) -> str:
    """The hash of ``clip``'s architecture and parameters. Parameters, not the state dict:
    buffers such as ``position_ids`` went in and out of the state dict between transformers
    releases without any weight changing."""
    h = hashlib.sha256(json.dumps(architecture(clip.config), sort_keys=True).encode())
    for name, tensor in sorted(clip.named_parameters()):
        _hash_tensor(h, name, tensor)
    return h.hexdigest()[:16]


def encoder_id(clip, dim: int) -> str:
    return f"clip-{dim}-{ID_VERSION}-{content_fingerprint(clip)}"


def is_legacy_id(encoder_id_: str) -> bool:
    """Whether an id was made by the path-dependent algorithm (before ``w2``)."""
    return bool(_LEGACY.match(encoder_id_ or ""))


def legacy_fingerprint(clip, name_or_path: str) -> str:
    """The id whyclip gave this model before ``w2``, had it been loaded as ``name_or_path``:
    the whole config (``_name_or_path`` and ``transformers_version`` included) and the state
    dict's samples. Only for recognising ids already stored; never stored anew."""
    config = clip.config
    saved = config._name_or_path
    try:
        config._name_or_path = name_or_path
        h = hashlib.sha256(config.to_json_string(use_diff=False).encode())
    finally:
        config._name_or_path = saved
    for name, tensor in sorted(clip.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        for part in (flat[:64], flat[-64:]):
            h.update(np.ascontiguousarray(part.float().cpu().numpy()).tobytes())
    return f"clip-{int(clip.config.projection_dim)}-{h.hexdigest()[:16]}"


# -- the same hash from the weights file, without building the model --------------------------

_NUMPY = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2"}


def _as_float32(values: np.ndarray, dtype: str) -> np.ndarray:
    """Samples as ``tensor.float()`` gives them (bf16: the upper half of a float32)."""
    if dtype == "BF16":
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(np.float32)


def safetensors_tensors(folder) -> dict[str, tuple[str, str, tuple[int, ...], int, int]] | None:
    """name -> (file, dtype, shape, start, end) of the float tensors of a safetensors
    checkpoint (one file or an index of shards); None when the folder has none or a tensor
    of another dtype. Reads headers only."""
    from pathlib import Path

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    )
    out = {}
    for name in files:
        path = folder / name
        if not path.is_file():
            return None
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        base = 8 + size
        for key, spec in header.items():
            if key == "__metadata__":
                continue
            if spec["dtype"] not in _NUMPY:
                return None
            start, end = spec["data_offsets"]
            out[key] = (str(path), spec["dtype"], tuple(spec["shape"]), base + start, base + end)
    return out


def read_tensor(spec) -> np.ndarray:
    """One tensor of :func:`safetensors_tensors` as float32 (memory-mapped, then copied)."""
    path, dtype, shape, start, end = spec
    flat = np.memmap(
        path, dtype=_NUMPY[dtype], mode="r", offset=start, shape=((end - start) // np.dtype(_NUMPY[dtype]).itemsize,)
    )
    return _as_float32(np.asarray(flat), dtype).reshape(shape)


def file_fingerprint(config, tensors: dict) -> str:
    """:func:`content_fingerprint` of the model that ``config`` and the checkpoint
    ``tensors`` (:func:`safetensors_tensors`) load into, read from the file: only the
    sampled values are touched (memory-mapped). Every checkpoint tensor is taken as a
    parameter except ``position_ids`` buffers, which older checkpoints carry; the encoder
    checks this against the loaded model's parameter names when it loads a tower."""
    h = hashlib.sha256(json.dumps(architecture(config), sort_keys=True).encode())
    for name in sorted(n for n in tensors if not n.endswith("position_ids")):
        path, dtype, shape, start, end = tensors[name]
        item = np.dtype(_NUMPY[dtype]).itemsize
        n = (end - start) // item
        flat = np.memmap(path, dtype=_NUMPY[dtype], mode="r", offset=start, shape=(n,))
        h.update(name.encode())
        h.update(str(tuple(shape)).encode())
        step = max(1, n // SAMPLE)
        for part in (flat[:SAMPLE], flat[::step][:SAMPLE], flat[-SAMPLE:]):
            h.update(np.ascontiguousarray(_as_float32(np.asarray(part), dtype)).tobytes())
    return h.hexdigest()[:16]
