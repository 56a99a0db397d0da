"""Where in the image, for an explanation: the maps of its shown descriptors, made once here
for every surface (the command line's ``--maps``, ``maps=true`` over HTTP, the dashboard and
the Python API's :meth:`whyclip.ingest.services.explain.Explainer.maps`).

The mapped descriptors are those the explanation lists under each shown class, plus the
descriptors of the contrast's two classes where they are not shown, best first, up to the
listing bound. One decomposition of the image serves them all (a matrix product each); the
dense map comes from the same pass; the occlusion check is one batch of masked images for
all of them. A tower that cannot be decomposed gets occlusion only, with a note saying why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from whyclip.store import DescriptorMap, Explanation, ImageMaps, InputError, Library

CHECKS = ("occlusion",)


@dataclass(frozen=True)
class MapOptions:
    """Which maps: the exact decomposition always (where the tower allows), the ``dense``
    ClearCLIP map, and the ``check`` (``occlusion``) on a ``grid`` x ``grid`` grid (default:
    the patch grid, at most 7 x 7); ``layers``: the attention layers the exact map is made of."""

    check: str | None = None
    dense: bool = False
    layers: int | None = None  # None: decompose.LAST_LAYERS
    grid: int | None = None


def check_map_options(options: MapOptions) -> None:
    if options.check is not None and options.check not in CHECKS:
        raise InputError(f"unknown map check {options.check!r}: the check is {', '.join(CHECKS)}")
    if options.layers is not None and not 1 <= options.layers <= 64:
        raise InputError(f"map layers must be between 1 and 64 (got {options.layers})")
    if options.grid is not None and not 1 <= options.grid <= 16:
        raise InputError(f"the occlusion grid must be between 1 and 16 cells a side (got {options.grid})")


def mapped_classes(explanation: Explanation) -> list[str]:
    """The classes whose descriptors get maps: the shown ones, then the contrast's two."""
    names = [c.name for c in explanation.classes]
    if explanation.contrast is not None:
        names += [n for n in (explanation.contrast.a, explanation.contrast.b) if n not in names]
    return names


def _chosen(
    library: Library, explanation: Explanation, listed: int
) -> tuple[list[tuple[str, str, str]], np.ndarray, list[bool]]:
    """(class, descriptor, prompt) of each mapped descriptor and their unit text vectors: a
    shown class's listed descriptors, in its listing's order; a contrast-only class's all
    (up to ``listed``; ordered by S later)."""
    shown = {c.name: c for c in explanation.classes}
    rows: list[tuple[str, str, str]] = []
    vectors: list[np.ndarray] = []
    ordered: list[bool] = []  # whether the row's order is the explanation's (else by S)
    for name in mapped_classes(explanation):
        texts, vecs, fallback = library.class_descriptors(name)
        if name in shown:
            free: dict[tuple[str, str], list[int]] = {}
            for i, t in enumerate(texts):
                free.setdefault(t, []).append(i)
            picks = []
            for d in shown[name].descriptors:
                key = ("", d.prompt) if fallback else (d.descriptor, d.prompt)
                if free.get(key):
                    picks.append(free[key].pop(0))
            ordered += [True] * len(picks)
        else:
            picks = list(range(len(texts)))
            ordered += [False] * len(picks)
        rows += [(name, *texts[i]) for i in picks]
        vectors += [vecs[i] for i in picks]
    dim = library.info.dim
    return rows, (np.stack(vectors) if vectors else np.zeros((0, dim), np.float32)), ordered


def _grid(a: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in a]


def image_maps(
    map_model,
    pixels,
    library: Library,
    explanation: Explanation,
    options: MapOptions = MapOptions(),
    listed: int = 1000,
    decomposition=None,
) -> ImageMaps:
    """The maps of ``explanation``'s shown descriptors on one image (``pixels``, (1, 3, H, W),
    from ``map_model``'s processor): see the module's text. ``decomposition``: the image's,
    when the caller made it already (:func:`decompose_image`), else it is made here."""
    from whyclip.ingest.encoder.decompose import agreement, occlusion_scores

    rows, texts, ordered = _chosen(library, explanation, listed)
    scale = library.info.logit_scale
    reachable = map_model.reason is None
    patches = dense = drops = None
    if reachable:
        dec = decomposition or decompose_image(map_model, pixels, options)
        patches, rest = dec.scores(texts, scale)
        scores = patches.sum(axis=(1, 2)) + rest
        dense = dec.dense_scores(texts, scale) if options.dense else None
        grid, layers_used = dec.grid, dec.layers
    else:
        rest, grid, layers_used = None, None, None
    if options.check == "occlusion" or not reachable:
        base, drops = occlusion_scores(map_model.tower, pixels, texts, scale, options.grid)
        if not reachable:
            scores = base
    agree = agreement(patches, drops) if patches is not None and drops is not None else [None] * len(rows)
    # a contrast-only class's descriptors, best first, up to the listing bound
    keep: list[int] = []
    by_class: dict[str, list[int]] = {}
    for i, (name, _, _) in enumerate(rows):
        by_class.setdefault(name, []).append(i)
    for idx in by_class.values():
        if not ordered[idx[0]]:
            idx = sorted(idx, key=lambda i: -scores[i])[:listed]
        keep += idx
    maps = [
        DescriptorMap(
            rows[i][0],
            rows[i][1],
            rows[i][2],
            float(scores[i]),
            None if rest is None else float(rest[i]),
            None if patches is None else _grid(patches[i]),
            None if dense is None else _grid(dense[i]),
            None if drops is None else _grid(drops[i]),
            agree[i],
        )
        for i in keep
    ]
    note = None
    if not reachable:
        note = f"maps by occlusion only: this model's insides are not reachable ({map_model.reason})"
    return ImageMaps(
        method="decomposition" if reachable else "occlusion",
        grid=grid,
        layers=layers_used,
        occlusion_grid=None if drops is None else int(drops.shape[-1]),
        dense=dense is not None,
        maps=maps,
        note=note,
        size=(int(pixels.shape[-2]), int(pixels.shape[-1])),
    )


def decompose_image(map_model, pixels, options: MapOptions = MapOptions()):
    """One image's decomposition (:func:`whyclip.ingest.encoder.decompose.decompose`) as the
    options ask: its ``embedding`` is the image's fp32 vector, so an explanation with maps
    needs no other forward pass."""
    from whyclip.ingest.encoder.decompose import LAST_LAYERS, decompose

    return decompose(map_model.tower, pixels, options.layers or LAST_LAYERS, dense=options.dense)


def worst_case_maps(library: Library, top: int, compare: Sequence[str] | None, listed: int) -> int:
    """The most maps one image of this library can get: the shown classes and the contrast's
    two, each with up to ``listed`` descriptors (its largest class's count at most)."""
    offsets = np.asarray(library.matrices.offsets)
    largest = int(max(1, np.diff(offsets).max())) if len(offsets) > 1 else 1
    classes = min(len(library.class_names), max(top, 2) + (2 if compare else 0))
    return classes * min(listed, largest)
