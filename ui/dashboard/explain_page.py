"""Explain page: pick or upload images; see the prediction, the descriptors behind it,
a two-class contrast and the library-wide best descriptors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import streamlit as st

from whyclip.ingest.services.explain import ExplainOptions, plan_explain
from whyclip.store import AGGREGATES, WhyclipError
from whyclip.ui.dashboard import cached, charts, maps_section
from whyclip.ui.render.maps import maps_note

s = cached.settings()
store = cached.store_or_stop(s)
info = cached.pick_library(store, s, key="explain_library")
aggregate = st.sidebar.radio(
    "Aggregate",
    AGGREGATES,
    index=AGGREGATES.index(info.aggregate),
    horizontal=True,
    help="mean: the paper's rule; centroid: cosine with the mean raw embedding; max: best descriptor",
)
top = st.sidebar.slider("Top classes", 2, 20, 5)
lib = cached.library(s, info)
stored = cached.calibration(s, lib, aggregate)
calibrated = st.sidebar.toggle(
    "Calibrated probabilities",
    value=False,
    disabled=stored is None,
    key="explain_calibrated",
    help=stored.summary()
    if stored
    else f"No calibration of this version ({aggregate}) yet: run `whyclip calibrate --library {info.name}`",
)
if info.n_descriptors == 0:
    st.info(f"Library {info.name!r} has no descriptors: every class is scored by its class-name prompt alone.")

st.title("Why did CLIP say that?")
cached.random_weight_banner(s.model or lib.info.encoder_name)
uploads = st.file_uploader("Upload images", type=None, accept_multiple_files=True)
samples, left_out = cached.samples_for(s, lib.class_names)
if note := cached.folder_images_note(s):
    st.warning(f"--images: {note}")
picked = st.multiselect("... or pick samples", list(samples), default=[] if uploads else list(samples)[:1])
if left_out:
    st.caption(
        f"The drawn samples of {', '.join(left_out)} are not offered: "
        f"{'they are not classes' if len(left_out) > 1 else 'it is not a class'} of library {info.name!r}."
    )
images = [(u.name, u.getvalue()) for u in uploads or []] + [(n, samples[n].read_bytes()) for n in picked]
if not images:
    st.info("Upload an image or pick a sample to explain it.")
    st.stop()
model = cached.encoder_or_stop(s, lib)


def table(data) -> None:
    """A table with its numbers in the CLI's decimals (S: 2)."""
    st.dataframe(data, hide_index=True, column_config=charts.number_formats(data))


def where_in_the_image(data: bytes, key: str, seen, explainer, exp, explained: tuple):
    """The map section: its legend, options and notes, then a picked descriptor's maps;
    returns (maps, view) for the contrast's maps, or None where there are none."""
    st.subheader("Where in the image: each descriptor's map")
    st.caption(maps_section.LEGEND)
    check, dense = maps_section.options_row(key)
    if seen is None:
        kind = type(cached.encoder(model)).__name__
        st.info(f"No maps: maps need a CLIP image tower, and this encoder ({kind}) has none.")
        return None
    if seen.decomposition is None and check is None:  # occlusion only: 49 encodes, when asked for
        reason = cached.encoder(model).map_model().reason
        st.info(
            f"This model's insides are not reachable ({reason}): its maps are by occlusion only. "
            "Tick the occlusion check to make them."
        )
        return None
    started = time.perf_counter()
    maps, fresh = cached.maps_of(model, seen, data, explainer, exp, explained, check, dense)
    maps_section.notes(maps, model, maps_note(cached.encoder(model)))
    if not maps.maps:
        st.info("No descriptor to map.")
        return None
    maps_section.selected(seen.view, maps, key)
    st.caption(
        f"{maps_section.REMAINDER} "
        + (f"Maps made in {(time.perf_counter() - started) * 1000:.0f} ms." if fresh else "Maps from the cache.")
    )
    return maps, seen.view


def show(name: str, data: bytes) -> None:
    key = hashlib.sha256(data).hexdigest()[:16]  # widgets follow the image, not its tab
    started = time.perf_counter()
    try:
        # a CLIP tower's decomposition gives the vector (fp32), so the maps split the S listed
        seen, fresh = cached.seen_image(model, name, data)
        vector = seen.vector if seen is not None else None
        if vector is None:
            vector, fresh = cached.image_vector(model, name, data)
    except WhyclipError as exc:
        st.error(str(exc))
        return
    encoded = time.perf_counter()
    ranking = np.argsort(-lib.scores(vector, aggregate)[0], kind="stable")[:500]
    choices = [lib.class_names[i] for i in ranking]
    pick_a, pick_b = st.columns(2)
    a = pick_a.selectbox("Contrast class A", choices, index=0, key=f"{key}-a")
    b = pick_b.selectbox("with class B", choices, index=min(1, len(choices) - 1), key=f"{key}-b")
    options = ExplainOptions(top=top, aggregate=aggregate, compare=(a, b), calibrated=calibrated)
    try:
        plan = plan_explain(store, info.name, info.version, options, load=lambda _name, _version: lib)
        explainer = plan.with_encoder(cached.encoder(model), cached.name_split(s, lib, model))
        exp = explainer.explain_vectors(vector, [name])[0]
    except WhyclipError as exc:
        st.error(str(exc))
        return
    explained = time.perf_counter()
    scale, best = exp.logit_scale, exp.classes[0]

    left, right = st.columns([1, 2])
    left.image(data, caption=name, width="stretch")
    right.subheader(f"Predicted: {best.name}")
    right.markdown(
        f"probability **{best.probability:.2f}** · score S = **{best.score * scale:.2f}** · "
        f"class name alone predicts **{exp.baseline[0].name}** ({exp.baseline[0].probability:.2f})"
    )
    strongest = ", ".join(
        f"**{d.prompt if d.fallback else d.descriptor}** ({d.scaled:.2f})" for d in best.descriptors[:3]
    )
    right.markdown(f"strongest descriptors: {strongest}")
    if exp.calibration:
        right.caption(f"Probabilities calibrated: {stored.summary()}.")
    with right.container():
        st.markdown("**Name vs description** (of each class's score, for this image)")
        for line in charts.name_description_lines(exp):
            st.markdown(f"- {line}")
    right.altair_chart(charts.probability_chart(exp), width="stretch")
    with right.expander("Scores of the top classes"):
        table(charts.classes_table(exp))

    st.subheader(f"Why {best.name}: its descriptors, ranked")
    st.altair_chart(charts.descriptor_chart(best, scale), width="stretch")
    st.caption(charts.descriptor_axis_note(best, scale))
    with st.expander("Descriptors of every top class"):
        for c in exp.classes:
            st.markdown(f"**{c.rank}. {c.name}** (S = {c.score * scale:.2f})")
            table(charts.descriptor_table(c))
    mapped = where_in_the_image(data, key, seen, explainer, exp, (info.name, info.version, top, aggregate, a, b))

    st.subheader(f"{a} vs {b}, descriptor by descriptor")
    if a == b:
        st.info("Pick two different classes to contrast them.")
    else:
        contrast = exp.contrast
        assert contrast is not None  # two different classes were compared
        st.caption(charts.contrast_caption(contrast, scale, aggregate))
        st.altair_chart(charts.contrast_chart(contrast, scale), width="stretch")
        rows = charts.contrast_table(contrast, scale)
        st.dataframe(
            rows,
            hide_index=True,
            height=min(35 * (len(rows) + 1) + 3, 738),  # every row of a short contrast, no inner scroll
            column_config={**charts.number_formats(rows), **charts.contrast_columns(contrast)},
        )
        if mapped is not None:
            st.markdown(f"**Where each class's evidence lies**: the maps of {a}'s and {b}'s descriptors")
            maps_section.side_by_side(mapped[0], mapped[1], a, b, key)
        pair = contrast.pair_descriptors
        if pair is not None:
            st.subheader(f"{a} vs {b}, by their pair descriptors (FuDD)")
            st.caption(
                f"Descriptions written to tell these two apart, stored apart from the classes' own lists: mean S "
                f"{pair.mean_a * scale:.2f} for {pair.a}, {pair.mean_b * scale:.2f} for {pair.b}; they favour "
                f"**{pair.favours}** (LLM {pair.provenance.get('model') or '?'})."
            )
            table(charts.pair_table(pair, scale))

    st.subheader("Best-matching descriptors in the whole library")
    r = exp.retrieval or {}
    if r and not r.get("exact", True):
        st.caption(
            f"approximate (recall {r['recall_at_10']:.2f}): {r['index']}, recall@10 against exact search "
            f"measured on {r.get('calibrated_on') or 'image-like queries'}"
        )
    else:
        st.caption("exact: every descriptor was scored")
    table(charts.retrieved_table(exp))
    st.download_button(
        "Download this explanation (JSON)" + (", with its maps" if mapped is not None else ""),
        json.dumps((exp if mapped is None else dataclasses.replace(exp, maps=mapped[0])).to_dict(), indent=2),
        file_name=f"{Path(name).stem}.whyclip.json",
        mime="application/json",
        key=f"{key}-dl",
    )
    how = " (fp32, decomposed for the maps)" if seen is not None and seen.decomposition is not None else ""
    st.caption(
        (
            f"image encoded{how} in {(encoded - started) * 1000:.0f} ms, "
            if fresh
            else f"image vector{how} from the cache, "
        )
        + f"explained in {(explained - encoded) * 1000:.0f} ms ({info.n_classes} classes, "
        f"{info.n_descriptors} descriptors)"
    )


tabs = st.tabs([name for name, _ in images]) if len(images) > 1 else [st.container()]
for tab, (name, data) in zip(tabs, images, strict=True):
    with tab:
        show(name, data)
