"""The Audit page's what-if: tick a class's descriptors off, add one, and see at once what
the run's predictions would be (exact, from the stored image vectors: only the edited class
is rescored); save the edit as a new library version with a note. It is a fragment: a tick
reruns this section alone, not the audit above it."""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from whyclip.store import WhyclipError, plan_edit
from whyclip.ui.dashboard import cached
from whyclip.ui.render.audit_report import pct

FLIP_COLUMNS = {
    "path": "image",
    "true": "true class",
    "before": "before",
    "before_score": "S before",
    "after": "after",
    "after_score": "S after",
}
FLIP_CONFIG = {
    "image": st.column_config.TextColumn(width="large", help="path from the run's dataset folder"),
    "S before": st.column_config.NumberColumn(format="%.2f", help="the top class's score x logit scale"),
    "S after": st.column_config.NumberColumn(format="%.2f", help="the top class's score x logit scale"),
}


def flip_table(flips: list[dict], dataset: str, scale: float) -> pd.DataFrame:
    """The flips as shown: paths from the dataset folder, scores as S (x logit scale)."""
    data = pd.DataFrame(flips)[list(FLIP_COLUMNS)].rename(columns=FLIP_COLUMNS)
    data["image"] = [shorter(p, dataset) for p in data["image"]]
    data[["S before", "S after"]] *= scale
    return data


def shorter(path: str, folder: str) -> str:
    """``path`` from ``folder`` where it lies inside it, else as stored."""
    try:
        relative = os.path.relpath(path, folder)
    except ValueError:  # another drive
        return path
    return path if relative.startswith("..") else relative


def _interval(fig: dict) -> str:
    return f"[{100 * fig['ci95'][0]:.1f}, {100 * fig['ci95'][1]:.1f}]"


@st.fragment
def render(s: cached.Settings, run, aggregate: str, scale: float) -> None:
    st.subheader("What-if: edit a class's descriptors")
    st.caption(
        "Untick descriptors or add one: the run's predictions are recomputed exactly from its stored image "
        "vectors (only the edited class is rescored), as re-ingesting the edited library and re-running eval "
        "would give them. The same as `whyclip whatif`."
    )
    lib = cached.library(s, cached.store_or_stop(s).library(run.library_name, run.library_version))
    try:
        session = cached.whatif_session(s.home, s.db, run.library_name, run.library_version, run.id, aggregate)
    except WhyclipError as exc:
        st.error(str(exc))
        return
    names = lib.class_names
    c = st.selectbox("Class", range(len(names)), format_func=names.__getitem__, key="whatif_class")
    texts = [t for t, _ in lib.class_texts(c)]
    cols = st.columns(3)
    kept = [cols[j % 3].checkbox(t, value=True, key=f"whatif_keep_{c}_{j}") for j, t in enumerate(texts)]
    if not texts:
        st.caption(f"{names[c]} has no descriptors: it is scored by its baseline prompt.")
    added = st.text_input(
        f"Add a descriptor to {names[c]}", key=f"whatif_add_{c}", placeholder="e.g. a white-tipped tail"
    )
    drops = [(names[c], t) for t, k in zip(texts, kept, strict=True) if not k]
    try:
        edit = plan_edit(lib, drops, [(names[c], added)] if added.strip() else [])
        vectors = {}
        if edit.new_prompts:
            model = cached.encoder_or_stop(s, lib)
            vectors = cached.prompt_vectors(
                s.home, s.db, model, lib.info.name, lib.info.version, tuple(edit.new_prompts)
            )
        a = session.answer(edit, vectors)
    except WhyclipError as exc:
        st.error(str(exc))
        return
    before, after = a["accuracy_before"], a["accuracy_after"]
    m = st.columns(3)
    m[0].metric("top-1 before", pct(before["accuracy"]), help=f"95% interval {_interval(before)}")
    m[1].metric(
        "top-1 after",
        pct(after["accuracy"]),
        delta=f"{100 * a['difference']:+.1f} pts" if a["difference"] else None,
        help=f"95% interval {_interval(after)}",
    )
    m[2].metric("McNemar p", f"{a['p_value']:.3g}", help="exact paired test on the images that flip")
    st.markdown(f"**{a['statement']}**; 95% intervals: before {_interval(before)}, after {_interval(after)}.")
    for note in a["notes"]:
        st.info(note)
    for key, title in (("wrong_to_right", "Wrong -> right"), ("right_to_wrong", "Right -> wrong")):
        flips = a["flips"][key]
        st.markdown(f"**{title} ({len(flips)})**")
        if flips:
            st.dataframe(flip_table(flips, run.dataset, scale), hide_index=True, column_config=FLIP_CONFIG)
        else:
            st.caption("none")
    note = st.text_input("Note for the new version", key="whatif_note", placeholder="why this edit")
    if st.button(
        "Save as new version",
        key="whatif_save",
        disabled=not edit.classes,
        help=f"publish {lib.info.name} with this edit as its next version; v{lib.info.version} stays as it is",
    ):
        try:
            saved = cached.save_edit(s.home, s.db, s.model or lib.info.encoder_name, lib, edit, note)
        except WhyclipError as exc:
            st.error(str(exc))
            return
        st.success(
            f"Saved as {saved.name} v{saved.version}"
            + (f" with the note {saved.note!r}" if saved.note else "")
            + f"; v{lib.info.version} and its runs are unchanged."
        )
