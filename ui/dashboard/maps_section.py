"""The Explain page's maps: where in the image each descriptor of the explanation is seen.
One descriptor picked (the predicted class's best by default) with its maps over the picture
the model saw, then the contrast's two classes side by side. The maps come from the core
(:meth:`whyclip.ingest.services.explain.Explainer.maps`), made once per image, library
version and options (:func:`whyclip.ui.dashboard.cached.image_maps`); this module only draws."""

from __future__ import annotations

import numpy as np
import streamlit as st

from whyclip.ingest.encoder.loading import is_test_model
from whyclip.store import MAP_KINDS, DescriptorMap, ImageMaps
from whyclip.ui.render.maps import caption, overlay

LEGEND = (
    "Red raises the descriptor's S, blue lowers it (the stronger the colour, the larger the cell's share); "
    "exact maps add up to S with the remainder; an agreement with occlusion (Spearman) near 1 means the map "
    "can be trusted for where, near 0 or below it cannot."
)
REMAINDER = (
    "The remainder is the part of S no image location holds: the earlier layers, the MLPs and the class "
    "token's attention to itself."
)
SIDE = 224  # pixels a map is drawn at (at least): a small model's view is enlarged cell by cell


def enlarge(picture: np.ndarray, side: int = SIDE) -> np.ndarray:
    """``picture`` (H, W, 3) repeated pixel by pixel (no smoothing: a patch stays a block)
    until its shorter side is at least ``side``."""
    k = max(1, -(-side // max(1, min(picture.shape[:2]))))
    return picture if k == 1 else np.repeat(np.repeat(picture, k, axis=0), k, axis=1)


def label(m: DescriptorMap) -> str:
    return m.descriptor or f"{m.prompt} (no descriptors: baseline prompt)"


def panels(
    view: np.ndarray, m: DescriptorMap, maps: ImageMaps, picture: bool = True
) -> tuple[list[np.ndarray], list[str]]:
    """The picture the model saw (unless not ``picture``), then each map the descriptor has
    over it (exact first), enlarged, with their captions; a map's full colour is its own
    largest cell."""
    images, captions = [], []
    if picture:
        images.append(enlarge(view))
        captions.append(f"the picture the model saw ({view.shape[1]}x{view.shape[0]})")
    kinds = (
        (m.patches, f"exact, last {maps.layers} layers: share of S per patch"),
        (m.dense, "dense (ClearCLIP): does not add up to S"),
        (m.occlusion, f"occlusion {maps.occlusion_grid}x{maps.occlusion_grid}: fall in S when masked"),
    )
    for grid, title in kinds:
        if grid is not None:
            g = np.asarray(grid, dtype=np.float64)
            images.append(enlarge(overlay(view, g)))
            captions.append(f"{title} (full colour: {np.abs(g).max():.2g})")
    return images, captions


def draw(view: np.ndarray, m: DescriptorMap, maps: ImageMaps, picture: bool = True) -> None:
    """One descriptor's maps and its line: S, the patches against the remainder, the agreement.
    Each in its column, at its own size (PNG: a map resized on the server would blur its
    cells), or as wide as its column beside the other class's (``picture`` False)."""
    images, captions = panels(view, m, maps, picture)
    slots = st.columns(max(len(images), 4 if picture else 3), gap="small")  # a panel keeps its place
    for column, image, text in zip(slots, images, captions, strict=False):
        column.image(image, caption=text, width=image.shape[1] if picture else "stretch", output_format="PNG")
    st.markdown(f"**{label(m)}** ({m.class_name}): {caption(m)}")


def options_row(key: str) -> tuple[str | None, bool]:
    """The two checkboxes: the occlusion check and the dense map; (check, dense)."""
    left, right = st.columns(2)
    occlusion = left.checkbox(
        "occlusion check (slower: up to 49 encodes)",
        key=f"{key}-occlusion",
        help=f"{MAP_KINDS['occlusion'][0].upper()}{MAP_KINDS['occlusion'][1:]}: one re-encode of the picture per "
        "cell of the patch grid, at most 7x7 (49 cells), in one batch for every descriptor; gives each map its "
        "agreement with the exact map.",
    )
    dense = right.checkbox(
        "dense map (ClearCLIP): sharper, but it does not add up to S",
        key=f"{key}-dense",
        help=f"{MAP_KINDS['dense'][0].upper()}{MAP_KINDS['dense'][1:]}; from the same forward pass.",
    )
    return ("occlusion" if occlusion else None), dense


def notes(maps: ImageMaps, model: str, note: str | None) -> None:
    """What to know before reading the maps: a random-weight model's maps mean nothing, the
    precision note, and a model mapped by occlusion only."""
    if is_test_model(model):
        st.warning(note or f"`{model}` has random weights: its maps mean nothing.", icon=":material/warning:")
    elif note:
        st.caption(note)
    if maps.note:
        st.info(maps.note)


def choices(maps: list[DescriptorMap], with_class: bool) -> dict[str, DescriptorMap]:
    """``{option label: map}`` for a select box, each label unique."""
    out: dict[str, DescriptorMap] = {}
    for m in maps:
        text = f"{m.class_name}: {label(m)}" if with_class else label(m)
        name, k = f"{text} (S {m.score:.2f})", 2
        while name in out:
            name, k = f"{text} (S {m.score:.2f}, {k})", k + 1
        out[name] = m
    return out


def selected(view: np.ndarray, maps: ImageMaps, key: str) -> None:
    """A select box of every mapped descriptor (the predicted class's best first) and its maps."""
    options = choices(maps.maps, with_class=True)
    pick = st.selectbox(
        "Descriptor to map",
        list(options),
        index=0,
        key=f"{key}-map",
        help="every descriptor the explanation lists, class by class (the predicted class first)",
    )
    draw(view, options[pick], maps)


def side_by_side(maps: ImageMaps, view: np.ndarray, a: str, b: str, key: str) -> None:
    """The contrast's two classes in two columns, each with its best descriptor's maps (or
    the one picked in its box): where each class's evidence lies."""
    for column, name, side in zip(st.columns(2), (a, b), ("a", "b"), strict=True):
        with column:
            st.markdown(f"**{name}**")
            options = choices(maps.of_class(name), with_class=False)
            if not options:
                st.caption(f"{name}: no descriptor mapped")
                continue
            pick = st.selectbox(f"Descriptor of {name}", list(options), index=0, key=f"{key}-map-{side}-{name}")
            draw(view, options[pick], maps, picture=False)
