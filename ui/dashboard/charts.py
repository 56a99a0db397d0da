"""Altair charts and tables for an explanation. Scores are shown on the logit scale
(S = similarity x logit scale), as in the paper's worked example."""

from __future__ import annotations

import altair as alt
import pandas as pd

from whyclip.store import ClassScore, Contrast, Explanation

DESCRIPTORS, BASELINE = "by descriptors", "class name only (baseline)"


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
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(
            y=alt.Y("class:N", sort=order, title=None),
            yOffset=alt.YOffset("how:N", sort=[DESCRIPTORS, BASELINE]),
            x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1])),
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


def descriptor_chart(c: ClassScore, scale: float) -> alt.LayerChart:
    """A class's descriptors ranked by S, with the class score marked."""
    data = descriptor_table(c)
    order = list(data["descriptor"])
    bars = (
        alt.Chart(data)
        .mark_bar(color="#2e7d32")
        .encode(
            y=alt.Y("descriptor:N", sort=order, title=None, axis=alt.Axis(labelLimit=320)),
            x=alt.X("S:Q", title=f"S(descriptor) = similarity x {scale:.0f}"),
            tooltip=["descriptor", "prompt", alt.Tooltip("S:Q", format=".2f")],
        )
    )
    rule = alt.Chart(pd.DataFrame({"S": [c.score * scale], "label": [f"class score {c.score * scale:.2f}"]}))
    line = rule.mark_rule(color="#d32f2f", strokeDash=[4, 3], size=2).encode(x="S:Q")
    text = rule.mark_text(align="left", dx=4, dy=-6, color="#d32f2f").encode(x="S:Q", text="label:N", y=alt.value(0))
    return (bars + line + text).properties(height=alt.Step(22))


def contrast_table(c: Contrast, scale: float) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "descriptor": r.descriptor,
                f"S under {c.a}": None if r.a is None else r.a * scale,
                f"S under {c.b}": None if r.b is None else r.b * scale,
                "contribution": r.contribution * scale,
                "favours": r.favours,
            }
            for r in c.rows
        ]
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
    """Each descriptor's share of S(a) - S(b): right favours a, left favours b."""
    data = contrast_table(c, scale)
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y("descriptor:N", sort=list(data["descriptor"]), title=None, axis=alt.Axis(labelLimit=320)),
            x=alt.X("contribution:Q", title=f"contribution to S({c.a}) - S({c.b})"),
            color=alt.Color(
                "favours:N",
                scale=alt.Scale(domain=[c.a, c.b, "-"], range=["#2e7d32", "#1565c0", "#9e9e9e"]),
                legend=alt.Legend(orient="bottom"),
            ),
            tooltip=list(data.columns),
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
