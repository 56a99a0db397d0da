"""A CLIP folder's ``config.json`` read as plain data, without importing transformers
(``from transformers import CLIPConfig`` costs about a second a process; used by
:mod:`.clipmodel`).

The encoder reads its dimension, the text positions and the encoder id's architecture
(:func:`~.fingerprint.architecture`) from the config. ``CLIPConfig`` fills keys a file
leaves out with its class defaults, and those defaults are transformers', so a plain read is
taken only when the file names every key the encoder reads (as every config transformers
writes does); otherwise :func:`read_config` returns None and ``CLIPConfig`` reads it, so the
encoder id never depends on which reader ran (``tests/test_texttower.py`` checks they agree).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from whyclip.ingest.encoder.fingerprint import TEXT_KEYS, TOP_KEYS, TOWER_KEYS, VISION_KEYS

# the model types transformers gives each part whatever the file says
MODEL_TYPES = {"text_config": "clip_text_model", "vision_config": "clip_vision_model"}


def read_config(folder: Path) -> SimpleNamespace | None:
    """The config as attributes (``projection_dim``, ``text_config.max_position_embeddings``,
    ...), or None when the file leaves out a key the encoder reads or carries the old
    ``*_config_dict`` parts (then ``CLIPConfig`` must fill them in)."""
    try:
        raw = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if raw.get("model_type") != "clip" or "text_config_dict" in raw or "vision_config_dict" in raw:
        return None
    parts = {}
    for part, extra in (("text_config", TEXT_KEYS), ("vision_config", VISION_KEYS)):
        sub = raw.get(part)
        if not isinstance(sub, dict):
            return None
        needed = [k for k in TOWER_KEYS + extra if k != "model_type"]
        if any(k not in sub or isinstance(sub[k], (dict, list)) for k in needed):
            return None
        parts[part] = SimpleNamespace(**{**sub, "model_type": MODEL_TYPES[part]})
    if any(k not in raw for k in TOP_KEYS) or not isinstance(raw.get("projection_dim"), int):
        return None
    return SimpleNamespace(**{**raw, **parts})
