"""Altair charts and tables for an explanation. Scores are shown on the logit scale
(S = similarity x logit scale, 2 decimals as in the CLI), as in the paper's worked example."""

from __future__ import annotations

import math

import altair as alt
import pandas as pd
import streamlit as st

from whyclip.store import ClassScore, Contrast, Explanation, midpoint_rule

DESCRIPTORS, BASELINE = "by descriptors", "class name only (baseline)"
LABEL_LIMIT = 420  # pixels of an axis label before Vega cuts it with "..."


def number_formats(data: pd.DataFrame) -> dict:
    """``column_config`` giving each numeric column of a table the CLI's decimals: S and
    contributions 2 (on the logit scale), probabilities 3, raw cosines 4, shares as percent."""
    config = {}
    for column in data.columns:
        if not pd.api.types.is_numeric_dtype(data[column]):
            continue
        name = str(column)
        if name == "contribution":
            fmt = "%+.2f"
        elif name == "S" or name.startswith(("S ", "S(")):
            fmt = "%.2f"
        elif "probability" in name or name == "weight":
            fmt = "%.3f"
        elif "share" in name:
            fmt = "percent"
        elif name in ("score", "similarity"):
            fmt = "%.4f"
        else:
            continue
        config[name] = st.column_config.NumberColumn(name, format=fmt)
    return config


def around(values: list[float], pad: float = 0.08) -> list[float]:
    """An axis domain just around ``values`` (not from 0): bars that start there still rank
    by length when every value is negative, or large and close together (S of 20-30)."""
    lo, hi = min(values), max(values)
    margin = pad * (hi - lo) if hi > lo else max(0.5, 0.05 * abs(hi))
    return [round(lo - margin, 4), round(hi + margin, 4)]


def classes_table(exp: Explanation) -> pd.DataFrame:
    rows = []
    for c in exp.classes:
        row = {
            "class": c.name,
            "probability": c.probability,
            "S (score x scale)": c.score * exp.logit_scale,
            "score": c.score,
            "baseline probability": c.baseline_probability,
        }
        if c.uncalibrated_probability is not None:
            row["uncalibrated probability"] = c.uncalibrated_probability
        if c.name_share is not None:
            row["name share"], row["description share"] = c.name_share, c.description_share
        rows.append(row)
    return pd.DataFrame(rows)


def name_description_lines(exp: Explanation) -> list[str]:
    """One line per shown class: how much of its score, for this image, the class name alone
    gives and how much the descriptor content adds (or the note why there is no split)."""
    nd = exp.name_description or {}
    if nd.get("note"):
        return [nd["note"]]
    return [
        f"**{c.name}**: class name alone {100 * c.name_share:.0f}% · descriptor content "
        f"{100 * c.description_share:.0f}%"
        for c in exp.classes
        if c.name_share is not None and c.description_share is not None
    ]


def probability_chart(exp: Explanation) -> alt.Chart:
    """Top classes: probability by descriptors beside probability by class name alone."""
    rows = [{"class": c.name, "rank": c.rank, "how": DESCRIPTORS, "probability": c.probability} for c in exp.classes]
    rows += [
        {"class": c.name, "rank": c.rank, "how": BASELINE, "probability": c.baseline_probability} for c in exp.classes
    ]
    order = [c.name for c in exp.classes]
    highest = max(max(c.probability, c.baseline_probability) for c in exp.classes)
    top = min(1.0, math.ceil(highest * 1.1 * 20) / 20) or 0.05  # scaled to the data, in steps of 0.05
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(
            y=alt.Y("class:N", sort=order, title=None, axis=alt.Axis(labelLimit=LABEL_LIMIT)),
            yOffset=alt.YOffset("how:N", sort=[DESCRIPTORS, BASELINE]),
            x=alt.X("probability:Q", scale=alt.Scale(domain=[0, top]), title="probability"),
            color=alt.Color("how:N", sort=[DESCRIPTORS, BASELINE], legend=alt.Legend(orient="bottom", title=None)),
            tooltip=["class", "how", alt.Tooltip("probability:Q", format=".3f")],
        )
        .properties(height=alt.Step(14))
    )


def descriptor_table(c: ClassScore) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "descriptor": d.prompt if d.fallback else d.descriptor,
                "S": d.scaled,
                "similarity": d.similarity,
                "weight": d.weight,
                "prompt": d.prompt,
            }
            for d in c.descriptors
        ]
    )


def descriptor_domain(c: ClassScore, scale: float) -> list[float]:
    """The S axis of :func:`descriptor_chart`: around its descriptors' S and the class score."""
    return around([d.scaled for d in c.descriptors] + [c.score * scale])


def descriptor_axis_note(c: ClassScore, scale: float) -> str:
    lo = descriptor_domain(c, scale)[0]
    return (
        f"Bars start at S = {lo:.2f}, just below the smallest S shown (not at 0), so the longest bar is the "
        "best descriptor; the red line is the class score."
    )


def descriptor_chart(c: ClassScore, scale: float) -> alt.LayerChart:
    """A class's descriptors ranked by S, with the class score marked. The axis starts near
    the smallest S shown (see :func:`around`)."""
    data = descriptor_table(c)
    order = list(data["descriptor"])
    domain = descriptor_domain(c, scale)
    bars = (
        alt.Chart(data)
        .mark_bar(color="#2e7d32", clip=True)
        .encode(
            y=alt.Y("descriptor:N", sort=order, title=None, axis=alt.Axis(labelLimit=LABEL_LIMIT)),
            x=alt.X(
                "S:Q",
                title=f"S(descriptor) = similarity x {scale:.0f}",
                scale=alt.Scale(domain=domain, zero=False, nice=False),
            ),
            tooltip=["descriptor", "prompt", alt.Tooltip("S:Q", format=".2f")],
        )
    )
    rule = alt.Chart(pd.DataFrame({"S": [c.score * scale], "label": [f"class score {c.score * scale:.2f}"]}))
    line = rule.mark_rule(color="#d32f2f", strokeDash=[4, 3], size=2).encode(x="S:Q")
    text = rule.mark_text(align="left", dx=4, dy=-6, color="#d32f2f").encode(x="S:Q", text="label:N", y=alt.value(0))
    return (bars + line + text).properties(height=alt.Step(22))


def _s(x: float | None, scale: float) -> str:
    return "-" if x is None else f"{x * scale:.2f}"


def contrast_table(c: Contrast, scale: float) -> pd.DataFrame:
    """As the CLI's contrast: each descriptor's class, its S under each class ("-" where that
    class lacks it), its contribution to S(a) - S(b), and the class it pulls toward."""
    return pd.DataFrame(
        [
            {
                "descriptor": r.descriptor,
                "class": r.owner(c.a, c.b),
                f"S under {c.a}": _s(r.a, scale),
                f"S under {c.b}": _s(r.b, scale),
                "contribution": r.contribution * scale,
                "pulls toward": r.favours,
            }
            for r in c.rows
        ],
        columns=["descriptor", "class", f"S under {c.a}", f"S under {c.b}", "contribution", "pulls toward"],
    )


def contrast_columns(c: Contrast) -> dict:
    """The contrast table's S columns: text ("-" where a class lacks the descriptor), set right."""
    return {
        f"S under {name}": st.column_config.TextColumn(alignment="right", help=f"similarity x logit scale under {name}")
        for name in (c.a, c.b)
    }


def contrast_caption(c: Contrast, scale: float, aggregate: str) -> str:
    """One line: the midpoint rule with the midpoint's value, and the difference the bars add up to."""
    rule = midpoint_rule(c.a, c.b, aggregate)
    return (
        f"{rule[0].upper()}{rule[1:]}; midpoint {(c.score_a + c.score_b) / 2 * scale:.2f}. The contributions add "
        f"up to S({c.a}) - S({c.b}) = {(c.score_a - c.score_b) * scale:+.2f} exactly."
    )


def pair_table(p, scale: float) -> pd.DataFrame:
    """A pair's contrastive descriptors (FuDD): each feature as a's look and b's look, S of each."""
    return pd.DataFrame(
        [
            {
                "feature": f.attribute,
                f"{p.a}: description": f.a,
                f"S ({p.a})": f.similarity_a * scale,
                f"{p.b}: description": f.b,
                f"S ({p.b})": f.similarity_b * scale,
                "favours": f.favours,
            }
            for f in p.features
        ]
    )


def contrast_chart(c: Contrast, scale: float) -> alt.Chart:
    """Each descriptor's share of S(a) - S(b): right pulls toward a, left toward b."""
    data = contrast_table(c, scale)
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y("descriptor:N", sort=list(data["descriptor"]), title=None, axis=alt.Axis(labelLimit=LABEL_LIMIT)),
            x=alt.X("contribution:Q", title=f"contribution to S({c.a}) - S({c.b})"),
            color=alt.Color(
                "pulls toward:N",
                scale=alt.Scale(domain=[c.a, c.b, "-"], range=["#2e7d32", "#1565c0", "#9e9e9e"]),
                legend=alt.Legend(orient="bottom"),
            ),
            tooltip=[
                *[col for col in data.columns if col != "contribution"],
                alt.Tooltip("contribution:Q", format="+.2f"),
            ],
        )
        .properties(height=alt.Step(20))
    )


def retrieved_table(exp: Explanation) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "class": r.class_name,
                "descriptor": r.descriptor,
                "S": r.similarity * exp.logit_scale,
                "similarity": r.similarity,
            }
            for r in exp.retrieved
        ]
    )
