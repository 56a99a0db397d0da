"""Audit page: a stored evaluation run (``whyclip eval``) of the chosen library: accuracy
with 95% intervals beside the baseline and the controls (paired tests), the name/description
split, the calibration's reliability diagram, the deletion measurement, confused pairs with their
descriptor evidence, the descriptors that drive predictions, what-if edits of a class's
descriptors (with a save as a new version), and descriptor hygiene.
The same data as ``whyclip audit``; the HTML report downloads from here."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from whyclip.store import AGGREGATES, list_runs
from whyclip.ui.dashboard import audit_charts as charts
from whyclip.ui.dashboard import cached, whatif_section
from whyclip.ui.render.audit_report import pct, pvalue

s = cached.settings()
store = cached.store_or_stop(s)
info = cached.pick_library(store, s, key="audit_library")
runs = list_runs(store.engine, info.name)[::-1]
st.title(f"Audit of {info.name}")
if not runs:
    st.info(
        f"No evaluation runs for library {info.name!r} yet: run `whyclip eval DATASET --library {info.name}` "
        "(DATASET: a folder with one subfolder of images per class, or a CSV of path,label), then reload."
    )
    st.stop()
labels = [f"{r.name} (v{r.library_version}, {r.n_images} images, {r.created_at:%Y-%m-%d %H:%M})" for r in runs]
# keyed by library: the same options (0, 1, ...) under another library kept the old run's label in the browser
run = runs[st.sidebar.selectbox("Run", range(len(runs)), format_func=labels.__getitem__, key=f"audit_run:{info.name}")]
with st.sidebar.expander("Audit settings"):
    aggregate = st.selectbox("Aggregate", AGGREGATES, index=AGGREGATES.index(info.aggregate), key="audit_agg")
    delete_k = st.number_input("Deletion: descriptors removed", 1, 20, 3, key="audit_k")
    near = st.slider("Near-identical above cosine", 0.80, 1.00, 0.95, 0.01, key="audit_near")
    flat = st.slider("Flat below x median spread", 0.05, 1.00, 0.25, 0.05, key="audit_flat")
    min_n = st.number_input("Flag classes from this many images", 1, 1000, 10, key="audit_min_n")
try:
    cal_id = cached.calibration_id(s.home, s.db, run.library_id, aggregate)
    audit_args = (
        s.home,
        s.db,
        run.library_name,
        run.library_version,
        run.id,
        aggregate,
        int(delete_k),
        near,
        flat,
        int(min_n),
        cal_id,
    )
    a = cached.audit(*audit_args)
except Exception as exc:  # a library version removed under the run, a damaged index
    st.error(f"cannot audit run {run.name!r}: {exc}")
    st.stop()

run_info = store.library(run.library_name, run.library_version)
cached.random_weight_banner(s.model or run_info.encoder_name)
scale = run_info.logit_scale  # scores are shown as S = similarity x logit scale, as explain shows them
st.caption(
    f"Run **{run.name}**: {run.n_images} images from `{run.dataset}`, library v{run.library_version}, "
    f"aggregate **{a['aggregate']}**. Skipped files: {len(run.details.get('skipped', []))}."
)
by = {r["method"]: r for r in a["accuracy"]}
cols = st.columns(4)
cols[0].metric("descriptors, top-1", pct(by[a["aggregate"]]["top1"]))
gain = round(100 * (by[a["aggregate"]]["top1"] - by["baseline"]["top1"]), 1)
cols[1].metric(
    "class name only",
    pct(by["baseline"]["top1"]),
    delta=f"{gain:+.1f} pts by descriptors" if gain else "no difference by descriptors",
    delta_color="normal" if gain else "off",
    delta_arrow="auto" if gain else "off",
)
rw = a["controls"]["random_words"]
cols[2].metric(
    "random words", f"{pct(rw['accuracy_mean'])} ± {100 * rw['accuracy_sd']:.1f}" if "accuracy_mean" in rw else "-"
)
cols[3].metric("descriptors, top-5", pct(by[a["aggregate"]]["top5"]))
charts.accuracy_with_intervals(a)

st.subheader("Calibration")
cal = a["calibration"]
if cal.get("bins"):
    cal_cols = st.columns(3)
    if cal["calibrated"]:
        cal_cols[0].metric("ECE before", f"{cal['ece_before']:.3f}")
        cal_cols[1].metric(
            "ECE after",
            f"{cal['ece_after']:.3f}",
            delta=f"{cal['ece_after'] - cal['ece_before']:+.3f}",
            delta_color="inverse",
        )
        cal_cols[2].metric("temperature", f"{cal['temperature']:.3g}")
        st.caption(
            f"Fitted on run {cal['fitted_on']!r}"
            + (" with per-class biases" if cal["per_class_bias"] else "")
            + f"; measured on {cal['measured_on']}. NLL {cal['nll_before']:.3f} -> {cal['nll_after']:.3f}; "
            f"{cal['n_bins']} equal-width confidence bins."
        )
    else:
        cal_cols[0].metric("ECE", f"{cal['ece_before']:.3f}")
        cal_cols[1].metric("NLL", f"{cal['nll_before']:.3f}")
        st.info(cal["note"])
    charts.reliability(cal)
else:
    st.info(f"Calibration: {cal.get('note')}")

st.subheader("Controls")
st.caption(
    "Each compares the descriptors with another way of scoring the same images (McNemar's exact test; random "
    "words: a paired bootstrap). p >= 0.05 is not significant."
)
TITLES = {
    "baseline": "Class name alone",
    "name_description": "Name vs description",
    "swap": "Swapped descriptors",
    "random_words": "Random-word control",
    "shuffled_descriptor_words": "Shuffled descriptor words",
    "fudd": "FuDD pair descriptors",
}
for key, title in TITLES.items():
    c = a["controls"].get(key, {"note": "not in this audit"})
    if "note" in c:
        st.info(f"{title}: {c['note']}.")
    else:
        (st.success if c["significant"] else st.warning)(f"{title}: {c['verdict']}.")
nd = a["controls"]["name_description"]
if nd.get("per_class"):
    st.markdown("**How much of each class's score is its name, and how much its description**")
    charts.name_description(nd["per_class"])
st.markdown("**Deletion: how much the explanation's top descriptors carry**")
d = a["controls"]["deletion"]
if d.get("images"):
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "removed from the predicted class": f"its top {d['k']} descriptors (the explanation)",
                    "mean S drop": d["score_drop_top"] * scale,
                    "accuracy after": pct(d["accuracy_top_removed"]),
                },
                {
                    "removed from the predicted class": f"{d['k']} random descriptors ({d['draws']} draws)",
                    "mean S drop": d["score_drop_random"] * scale,
                    "accuracy after": pct(d["accuracy_random_removed"]),
                },
                {
                    "removed from the predicted class": "nothing",
                    "mean S drop": 0.0,
                    "accuracy after": pct(d["accuracy_before"]),
                },
            ]
        ),
        hide_index=True,
        column_config={"mean S drop": st.column_config.NumberColumn(format="%.2f")},
    )
    st.caption(
        f"{d['images']} images; {d['skipped']} skipped (their predicted class has {d['k']} descriptors or fewer). "
        "How much the explanation's top descriptors carry; a measurement, not a pass/fail test (for mean and max, "
        "removing the most similar descriptors always costs at least as much as removing any others)."
    )
else:
    st.info(f"Deletion control: {d.get('note')}")

st.subheader("Most confused pairs")
if not a["confusions"]:
    st.info("No confusions: every image's top class is its true class.")
EVIDENCE = {
    "text": st.column_config.TextColumn("descriptor"),
    "class": st.column_config.TextColumn("its class"),
    "contribution": st.column_config.NumberColumn(
        "S", format="%+.2f", help="contribution to S(predicted) - S(true): similarity x logit scale"
    ),
}
for p in a["confusions"]:
    with st.expander(f"{p['count']} x predicted {p['predicted']} for {p['true']}"):
        st.caption(
            f"Each descriptor's contribution to S({p['predicted']}) - S({p['true']}) (similarity x logit scale), "
            "measured from the midpoint of the two classes' scores, and the class it pulls toward."
        )
        evidence = pd.concat(
            [
                pd.DataFrame(p["towards_predicted"], columns=["text", "class", "contribution"]).assign(
                    **{"pulls toward": p["predicted"]}
                ),
                pd.DataFrame(p["towards_true"], columns=["text", "class", "contribution"]).assign(
                    **{"pulls toward": p["true"]}
                ),
            ],
            ignore_index=True,
        )
        evidence["contribution"] *= scale
        st.dataframe(evidence, hide_index=True, column_config=EVIDENCE)

st.subheader("Descriptors that drive predictions")
drivers = pd.DataFrame(
    [r for r in a["drivers"] if r["top_correct"] + r["top_wrong"]],
    columns=["class", "text", "predicted", "top_correct", "top_wrong", "mean_margin"],
)
drivers["mean_margin"] *= scale
st.caption(
    "How often each descriptor was its predicted class's top contributor, in correct and wrong predictions, "
    "and its mean share of the margin over the runner-up class (as S: similarity x logit scale)."
)
st.dataframe(
    drivers,
    hide_index=True,
    column_config={
        "text": "descriptor",
        "predicted": "class predicted",
        "top_correct": "top contributor, correct",
        "top_wrong": "top contributor, wrong",
        "mean_margin": st.column_config.NumberColumn("mean margin (S)", format="%+.2f"),
    },
)

st.subheader("Classes")
PERCENT = ("top1", "baseline_top1", "control_top1")
classes = pd.DataFrame(a["per_class"])
worse = classes["flagged"]
classes[[c for c in PERCENT if c in classes]] *= 100
classes["ci95"] = classes["ci95"].map(lambda v: f"[{100 * v[0]:.1f}, {100 * v[1]:.1f}] %")
classes["p_value"] = classes["p_value"].map(pvalue)
classes = classes.drop(columns=["baseline_ci95", "significant"])
st.dataframe(
    classes.style.apply(lambda r: ["background-color: #fdecea" if worse[r.name] else ""] * len(r), axis=1),
    hide_index=True,
    column_config={
        "n": "images",
        "ci95": st.column_config.TextColumn(
            "95% interval (descriptors)", help="Wilson interval of the descriptors' top-1 on this class"
        ),
        "p_value": st.column_config.TextColumn(
            "p (vs class name)", help="McNemar's exact test: descriptors against the class name alone"
        ),
        **{
            c: st.column_config.NumberColumn(label, format="%.1f%%")
            for c, label in zip(PERCENT, ("descriptors top-1", "class name top-1", "random words top-1"), strict=True)
        },
    },
)
st.caption(
    f"Red rows: the descriptors do worse than the class name alone, on at least {int(min_n)} images "
    "(p: McNemar's exact test against the class name)."
)

whatif_section.render(s, run, a["aggregate"], scale)

st.subheader("Descriptor hygiene")
h = a["hygiene"]
for note in h["notes"]:
    st.caption(note)
tabs = st.tabs(
    [
        f"Shared texts ({len(h['shared_texts'])})",
        f"Near-identical ({len(h['near_identical'])})",
        f"Flat ({len(h['flat'])})",
        f"Worse than baseline ({len(h['worse_than_baseline'])})",
    ]
)
for tab, key in zip(tabs, ("shared_texts", "near_identical", "flat", "worse_than_baseline"), strict=True):
    with tab:
        if h[key]:
            st.dataframe(pd.DataFrame(h[key]), hide_index=True)
        else:
            st.write("None found.")

left, right = st.columns(2)
left.download_button(
    "Download the HTML report",
    cached.audit_html(audit_args),
    file_name=f"{info.name}-{run.name}-audit.html",
    mime="text/html",
)
right.download_button(
    "Download JSON", json.dumps(a, indent=2), file_name=f"{info.name}-{run.name}-audit.json", mime="application/json"
)
