"""Altair charts of the Audit page: accuracy with its 95% interval bars, the name/description
split per class and the calibration's reliability diagram. Each draws into the page."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st


def accuracy_with_intervals(a: dict) -> None:
    """Top-1 of the audited aggregate by every way of scoring, with interval bars (Wilson;
    random words: mean ± sd over the draws)."""
    agg = a["aggregate"]
    by = {r["method"]: r for r in a["accuracy"]}
    rows = [
        {"scored by": name, "top-1": by[m]["top1"], "low": by[m]["ci95"][0], "high": by[m]["ci95"][1]}
        for name, m in (
            ("descriptors", agg),
            ("class name", "baseline"),
            ("bare descriptors", "bare:" + agg),
            ("swapped", "swap:" + agg),
            ("shuffled words", "control:" + agg),
        )
        if m in by
    ]
    rw = a["controls"].get("random_words", {})
    if "accuracy_mean" in rw:
        m, sd = rw["accuracy_mean"], rw["accuracy_sd"]
        rows.append(
            {
                "scored by": f"random words ({rw['draws']} draws)",
                "top-1": m,
                "low": max(0.0, m - sd),
                "high": min(1.0, m + sd),
            }
        )
    st.altair_chart(accuracy_chart(rows, agg), width="stretch")
    st.caption("Bars: 95% intervals (Wilson); random words: ± sd over the draws.")


def accuracy_chart(rows: list[dict], agg: str) -> alt.LayerChart:
    """Bars with their interval whiskers; one y-axis title for both layers."""
    data = pd.DataFrame(rows)
    order = list(data["scored by"])
    title = f"top-1 accuracy ({agg})"
    base = alt.Chart(data).encode(
        x=alt.X("scored by:N", sort=order, title=None, axis=alt.Axis(labelAngle=0, labelLimit=240))
    )
    bars = base.mark_bar().encode(
        y=alt.Y("top-1:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1]), title=title),
        color=alt.Color("scored by:N", sort=order, legend=None),
        tooltip=[
            "scored by",
            alt.Tooltip("top-1:Q", format=".1%"),
            alt.Tooltip("low:Q", format=".1%"),
            alt.Tooltip("high:Q", format=".1%"),
        ],
    )
    whiskers = base.mark_errorbar(ticks=True).encode(y=alt.Y("low:Q", title=title), y2="high:Q")
    return (bars + whiskers).properties(height=240)


ROW = 22  # pixels per class in the name/description chart: every label shows


def name_description(per_class: list[dict]) -> None:
    st.altair_chart(name_description_chart(per_class), width="stretch")


def name_description_chart(per_class: list[dict]) -> alt.Chart:
    rows = [
        {"class": f"{r['class']} (n={r['n']})", "part": part, "share": r[key]}
        for r in per_class
        for part, key in (("class name", "name_share"), ("descriptor content", "description_share"))
    ]
    chart = (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(
            y=alt.Y("class:N", title=None, sort=None, axis=alt.Axis(labelLimit=420, labelOverlap=False)),
            x=alt.X(
                "share:Q",
                stack="zero",
                axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1]),
                title="share of the true class's score",
            ),
            color=alt.Color(
                "part:N", sort=["class name", "descriptor content"], legend=alt.Legend(orient="bottom", title=None)
            ),
            tooltip=["class", "part", alt.Tooltip("share:Q", format=".1%")],
        )
    )
    return chart.properties(height=alt.Step(ROW))


SIDE = 360  # the reliability diagram is square: both axes run 0-1


def reliability(cal: dict) -> None:
    st.altair_chart(reliability_chart(cal), width="content")


def reliability_chart(cal: dict) -> alt.LayerChart:
    """Accuracy against mean top-1 confidence per equal-width bin, before (and after)
    calibration; the point size follows the bin's image count; the diagonal is perfect."""
    sides = ("before", "after") if cal.get("calibrated") else ("before",)
    names = {"before": "before" if cal.get("calibrated") else "library's probabilities", "after": "after"}
    rows = [
        {
            "when": names[when],
            "confidence": b[when]["confidence"],
            "accuracy": b[when]["accuracy"],
            "images": b[when]["count"],
        }
        for when in sides
        for b in cal["bins"]
        if b[when]["count"]
    ]
    x = alt.X("confidence:Q", scale=alt.Scale(domain=[0, 1]), title="confidence (top-1 probability)")
    y = alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy (share correct)")
    diagonal = (
        alt.Chart(pd.DataFrame({"confidence": [0, 1], "accuracy": [0, 1]}))
        .mark_line(strokeDash=[4, 4], color="#9aa5b1")
        .encode(x=x, y=y)
    )
    base = alt.Chart(pd.DataFrame(rows)).encode(
        x=x,
        y=y,
        color=alt.Color("when:N", sort=[names[w] for w in sides], legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["when", alt.Tooltip("confidence:Q", format=".2f"), alt.Tooltip("accuracy:Q", format=".2f"), "images"],
    )
    chart = diagonal + base.mark_line() + base.mark_circle().encode(size=alt.Size("images:Q", legend=None))
    return chart.properties(width=SIDE, height=SIDE, title="reliability diagram")
