"""Audit reports: plain text for the terminal, a self-contained HTML page (plots embedded as
SVG, no network), CSV tables and JSON, all rendered from :func:`whyclip.store.analysis.audit.audit`'s dict."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from whyclip.store import WORDS, method_label, midpoint_rule, write_text_atomic
from whyclip.ui.render.audit_plots import plots
from whyclip.ui.render.table import table_lines

TEXT_ROWS = 10


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def ci(interval: list[float] | None) -> str:
    return "-" if not interval else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def pvalue(p: float | None) -> str:
    return "-" if p is None else f"{p:.3g}" + ("" if p < 0.05 else " (not significant)")


def accuracy_lines(acc: list[dict]) -> list[str]:
    """One row per way of scoring; the random-word draws as one row per aggregate (mean ± sd)."""
    rows = [
        (a["label"], pct(a["top1"]), ci(a.get("ci95")), pct(a["top5"]), a["n"])
        for a in acc
        if not a["method"].startswith(WORDS)
    ]
    draws: dict[str, list[float]] = {}
    for a in acc:
        if a["method"].startswith(WORDS):
            draws.setdefault(a["method"].rsplit(":", 1)[-1], []).append(a["top1"])
    for agg, values in draws.items():
        sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        rows.append(
            (
                f"random words ({agg}, {len(values)} draws)",
                f"{pct(float(np.mean(values)))} ± {100 * sd:.1f}",
                "-",
                "-",
                acc[0]["n"],
            )
        )
    return table_lines(("scored by", "top-1", "95% interval", "top-5", "images"), rows)


CONTROL_ORDER = ("baseline", "name_description", "swap", "random_words", "shuffled_descriptor_words", "fudd")


def control_lines(controls: dict, per_class: int = TEXT_ROWS) -> list[str]:
    """One line per control, in a fixed order; under name vs description, its per-class lines."""
    titles = {
        "baseline": "class name alone",
        "name_description": "name vs description",
        "swap": "swapped descriptors",
        "random_words": "random-word control",
        "shuffled_descriptor_words": "shuffled descriptor words",
        "fudd": "FuDD pair descriptors",
    }
    out = []
    for key in CONTROL_ORDER:
        c = controls.get(key)
        if c is not None:
            out.append(f"{titles[key]}: {c.get('verdict') or c.get('note')}")
            if key == "name_description":
                out += name_description_lines(c, per_class)
    return out


def name_description_lines(nd: dict, limit: int = TEXT_ROWS) -> list[str]:
    """One line per class: how much of its score the name gives and the descriptors add."""
    if "per_class" not in nd:
        return []
    return [
        f"  {r['class']} (n={r['n']}): name {100 * r['name_share']:.0f}%, description "
        f"{100 * r['description_share']:.0f}%, descriptors change {100 * r['decisions_changed']:.0f}% of its decisions"
        for r in nd["per_class"][:limit]
    ]


def confusion_lines(pairs: list[dict], scale: float, aggregate: str, limit: int = TEXT_ROWS) -> list[str]:
    """The most confused pairs, each with the descriptors that pull toward either class: each
    descriptor's class and its mean contribution to S(predicted) - S(true), in S."""
    if not pairs:
        return ["no confusions: every image's top class is its true class"]

    def evidence(rows: list[dict]) -> str:
        return ", ".join(f"{r['text']} [{r['class']}] {r['contribution'] * scale:+.2f}" for r in rows[:3]) or "-"

    lines = [
        "  each descriptor [its class] with its mean contribution to S(predicted) - S(true) over the pair's images; "
        + midpoint_rule("predicted", "true", aggregate)
    ]
    for p in pairs[:limit]:
        lines.append(f"{p['count']:>5}  predicted {p['predicted']!r} for {p['true']!r}")
        lines.append(f"       pulls toward {p['predicted']}: {evidence(p['towards_predicted'])}")
        lines.append(f"       pulls toward {p['true']}: {evidence(p['towards_true'])}")
    return lines


def per_class_lines(classes: list[dict], limit: int = TEXT_ROWS) -> list[str]:
    worst = sorted(classes, key=lambda c: (c["top1"] - c["baseline_top1"], c["top1"], c["class"]))[:limit]
    return table_lines(
        ("class", "images", "descriptors", "95% interval", "baseline", "p (McNemar)", "flagged"),
        [
            (
                c["class"],
                c["n"],
                pct(c["top1"]),
                ci(c.get("ci95")),
                pct(c["baseline_top1"]),
                pvalue(c.get("p_value")),
                "yes" if c.get("flagged") else "",
            )
            for c in worst
        ],
    )


def calibration_lines(cal: dict | None) -> list[str]:
    """ECE, NLL and accuracy before (and after) calibration, and where they were measured."""
    if not cal or "bins" not in cal:
        return [f"calibration: {cal.get('note', '-')}"] if cal else []

    def figure(side: str) -> str:
        return (
            f"ECE {cal['ece_' + side]:.3f} {_plain_ci(cal['ece_' + side + '_ci95'])}, NLL {cal['nll_' + side]:.3f}, "
            f"top-1 {pct(cal['accuracy_' + side])} {ci(cal['accuracy_' + side + '_ci95'])}"
        )

    if not cal.get("calibrated"):
        return [
            f"calibration ({cal['n_bins']}-bin ECE, on {cal['measured_on']}): {figure('before')}",
            f"  {cal['note']}",
        ]
    bias = " and per-class biases" if cal.get("per_class_bias") else ""
    fitted = cal.get("fitted_on") or cal.get("run")
    return [
        f"calibration: temperature {cal['temperature']:.3g}{bias}, fitted on run {fitted!r}; measured on "
        f"{cal['measured_on']}",
        f"  before: {figure('before')}",
        f"  after:  {figure('after')}",
    ]


def _plain_ci(interval: list[float] | None) -> str:
    return "-" if not interval else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def to_text(a: dict) -> str:
    run, lib = a["run"], a["library"]
    agg = a["aggregate"]
    out = [
        f"audit of run {run['name']!r}: library {lib['name']} v{lib['version']} ({lib['classes']} classes, "
        f"{lib['descriptors']} descriptors), {run['n_images']} images from {run['dataset']}; aggregate {agg}",
        "",
    ]
    out += ["accuracy (top-1 with its Wilson 95% interval)", *accuracy_lines(a["accuracy"]), ""]
    out += [*calibration_lines(a.get("calibration")), ""]
    out += ["controls (paired over the same images)", *control_lines(a["controls"])]
    scale = lib["logit_scale"]
    d = a["controls"]["deletion"]
    if d.get("images"):
        out.append(
            f"how much the explanation's top {d['k']} descriptors carry ({d['images']} images; a measurement, "
            "not a test): removing them from the predicted class drops its score by S "
            f"{d['score_drop_top'] * scale:.2f} and accuracy to {pct(d['accuracy_top_removed'])} {ci(d.get('ci95'))}; "
            f"{d['k']} random ones: S {d['score_drop_random'] * scale:.2f}, {pct(d['accuracy_random_removed'])} "
            f"(before: {pct(d['accuracy_before'])}; "
            f"McNemar p against before = {pvalue(d.get('p_value'))})"
        )
    else:
        out.append(f"deletion: {d.get('note')}")
    out += [
        "",
        f"classes with the largest loss against the baseline (flagged from {a['settings']['min_n']} images)",
        *per_class_lines(a["per_class"]),
        "",
    ]
    out += ["most confused (predicted for true)", *confusion_lines(a["confusions"], scale, agg), ""]
    drivers = [r for r in a["drivers"] if r["top_correct"] + r["top_wrong"]][:TEXT_ROWS]
    out += [
        "descriptors that decide predictions (times top contributor: correct / wrong; mean margin vs runner-up, in S)"
    ]
    out += table_lines(
        ("class", "descriptor", "correct", "wrong", "margin (S)"),
        [
            (r["class"], r["text"], r["top_correct"], r["top_wrong"], f"{r['mean_margin'] * scale:+.2f}")
            for r in drivers
        ],
    )
    h = a["hygiene"]
    out += [
        "",
        "hygiene",
        f"  {len(h['shared_texts'])} texts shared by several classes"
        + (
            f" (most: {h['shared_texts'][0]['text']!r} in {h['shared_texts'][0]['classes']})"
            if h["shared_texts"]
            else ""
        ),
        f"  {len(h['near_identical'])} near-identical prompt pairs across classes (cosine >= "
        f"{a['settings']['near_threshold']})",
        f"  {len(h['flat'])} flat descriptors (similarity barely varies over the images)",
        f"  {len(h['worse_than_baseline'])} classes with at least {a['settings']['min_n']} images where the "
        "descriptors do worse than the class name",
        *(f"  note: {n}" for n in h["notes"]),
    ]
    return "\n".join(out)


# -- HTML ------------------------------------------------------------------------------------


def to_html(a: dict) -> str:
    """One self-contained page: every plot inline SVG, every number also in a table cell
    (with the JSON's full value in ``data-value``: raw similarities where the cell shows S)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["pct"] = pct
    template = env.get_template("audit_report.html")
    drivers = [r for r in a["drivers"] if r["top_correct"] + r["top_wrong"]]
    return template.render(
        a=a,
        plots=plots(a),
        drivers=drivers,
        label=method_label,
        ci=ci,
        pvalue=pvalue,
        scale=a["library"]["logit_scale"],
        midpoint_rule=midpoint_rule,
    )


# -- CSV and files ---------------------------------------------------------------------------

CSV_TABLES = {
    "accuracy": lambda a: a["accuracy"],
    "per_class": lambda a: a["per_class"],
    "drivers": lambda a: a["drivers"],
    "confusions": lambda a: [
        {
            "predicted": p["predicted"],
            "true": p["true"],
            "count": p["count"],
            "side": side,
            "class": r["class"],
            "text": r["text"],
            "contribution": r["contribution"],
        }
        for p in a["confusions"]
        for side in ("towards_predicted", "towards_true")
        for r in p[side]
    ],
    "shared_texts": lambda a: a["hygiene"]["shared_texts"],
    "near_identical": lambda a: a["hygiene"]["near_identical"],
    "flat": lambda a: a["hygiene"]["flat"],
    "worse_than_baseline": lambda a: a["hygiene"]["worse_than_baseline"],
    "controls": lambda a: [
        {
            "control": k,
            **{
                f: x
                for f, x in v.items()
                if f not in ("per_class", "bare_descriptors", "vs_descriptors", "vs_baseline")
            },
        }
        for k, v in a["controls"].items()
    ],
    "name_description": lambda a: a["controls"]["name_description"].get("per_class", []),
    "calibration": lambda a: (
        [
            {
                k: (json.dumps(v) if isinstance(v, list) else v)
                for k, v in a["calibration"].items()
                if k not in ("bins", "biases")
            }
        ]
        if a.get("calibration")
        else []
    ),
    "reliability": lambda a: [
        {
            "lower": b["lower"],
            "upper": b["upper"],
            **{f"{side}_{k}": v for side in ("before", "after") if side in b for k, v in b[side].items()},
        }
        for b in a.get("calibration", {}).get("bins", [])
    ],
}


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, so a reader never sees half
    (:func:`whyclip.store.write_text_atomic`: the file gets the umask's mode)."""
    write_text_atomic(path, text)


def write_report(a: dict, fmt: str, out: Path) -> list[Path]:
    """Write the report; CSV is a folder of one file per table. Returns the files written."""
    if fmt == "html":
        write_atomic(out, to_html(a))
        return [out]
    if fmt == "json":
        write_atomic(out, json.dumps(a, indent=2, ensure_ascii=False))
        return [out]
    written = []
    for name, rows in CSV_TABLES.items():
        path = out / f"{name}.csv"
        write_atomic(path, csv_text(rows(a)))
        written.append(path)
    return written
