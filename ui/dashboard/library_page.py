"""Library page: what a library is made of, browsed page by page in the database."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from whyclip.store import browse
from whyclip.ui.dashboard import cached

PAGE = 50
s = cached.settings()
store = cached.store_or_stop(s)
info = cached.pick_library(store, s, key="library_library")

st.title(f"Library {info.name}")
cols = st.columns(5)
for col, (label, value) in zip(
    cols,
    [
        ("version", info.version),
        ("classes", info.n_classes),
        ("descriptors", info.n_descriptors),
        ("distinct prompts", info.n_prompts),
        ("classes without descriptors", info.n_empty_classes),
    ],
    strict=True,
):
    col.metric(label, f"{value:,}")
st.dataframe(
    pd.DataFrame(
        [
            ("encoder", info.encoder_name),
            ("encoder id", info.encoder_id),
            ("dimension", info.dim),
            ("logit scale", f"{info.logit_scale:.2f}"),
            ("template", info.template),
            ("baseline prompt", info.baseline_template),
            ("default aggregate", info.aggregate),
            ("created", info.created_at.strftime("%Y-%m-%d %H:%M")),
            ("source", info.source),
            ("note", info.note or "-"),
        ],
        columns=["field", "value"],
    ).astype(str),
    hide_index=True,
)
if info.n_descriptors == 0:
    st.info("This library has no descriptors: every class is scored by its class-name prompt alone.")


def pager(total: int, key: str) -> int:
    """A page number input; returns the row offset."""
    pages = max(1, -(-total // PAGE))
    page = st.number_input(f"page (of {pages:,}; {total:,} rows)", 1, pages, 1, key=key)
    return (int(page) - 1) * PAGE


def highlight(row: pd.Series) -> list[str]:
    empty = row.get("descriptors", 1) == 0
    shared = row.get("classes sharing it", 0) > 1
    colour = "background-color: #fdecea" if empty else "background-color: #fff4e5" if shared else ""
    return [colour] * len(row)


def table(rows: list[dict]) -> None:
    frame = pd.DataFrame(rows)
    st.dataframe(frame.style.apply(highlight, axis=1) if rows else frame, hide_index=True)


# One view at a time (not tabs, which would run every view's queries on each rerun).
view = (
    st.segmented_control("View", ["Descriptors", "Classes", "Shared descriptors"], default="Descriptors", key="view")
    or "Descriptors"
)
if view == "Descriptors":
    search = st.text_input("Search classes, descriptors and prompts", key="d_search")
    order = st.selectbox("Sort by", list(browse.DESCRIPTOR_ORDERS), key="d_order")
    offset = pager(cached.count_rows(s.home, s.db, "descriptors", info.name, info.version, search), "d_page")
    st.caption("Orange rows: descriptor texts shared by several classes (they cannot tell them apart).")
    table(browse.descriptors_page(store.engine, info, search, order, offset, PAGE))
elif view == "Classes":
    st.caption("Red rows: classes without descriptors (scored by their baseline prompt).")
    search = st.text_input("Search classes", key="c_search")
    order = st.selectbox("Sort by", list(browse.CLASS_ORDERS), key="c_order")
    total = cached.count_rows(s.home, s.db, "classes", info.name, info.version, search)
    table(browse.classes_page(store.engine, info, search, order, pager(total, "c_page"), PAGE))
else:
    total = cached.count_rows(s.home, s.db, "shared", info.name, info.version)
    if total == 0:
        st.info("No descriptor text is shared by two classes.")
    else:
        st.caption("A descriptor that several classes share cannot tell them apart.")
        st.dataframe(
            pd.DataFrame(browse.shared_descriptors_page(store.engine, info, pager(total, "s_page"), PAGE)),
            hide_index=True,
        )
