"""Pictures made ready for the image tower ahead of encoding, one at a time: a picture's
pixel values are a few hundred KB whatever its size, so the full-size picture can go as soon
as it is prepared. Light to import (torch loads only to join a batch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class PreparedImages:
    """Pixel values ready for the image tower (:meth:`ClipEncoder.prepare_images`)."""

    def __init__(self, pixels, n: int):
        self.pixels, self.n = pixels, n

    def __len__(self) -> int:
        return self.n


def prepare_one(encoder, picture):
    """One decoded picture as the encoder will take it: its pixel values where the encoder
    prepares images ahead (a few hundred KB, whatever the picture's size, so the full-size
    picture can go at once), else the picture itself."""
    prepare = getattr(encoder, "prepare_images", None)
    return prepare([picture]) if prepare is not None else picture


def join_prepared(parts: Sequence) -> Any:
    """One batch for ``embed_images`` from pictures prepared one at a time by
    :func:`prepare_one`: pixel values concatenated, or the pictures as a list."""
    if parts and all(isinstance(p, PreparedImages) for p in parts):
        import torch

        return PreparedImages(torch.cat([p.pixels for p in parts]), sum(p.n for p in parts))
    out: list = []
    for p in parts:
        out.extend(p if isinstance(p, list) else [p])
    return out
