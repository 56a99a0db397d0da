"""Audit reports: plain text for the terminal, a self-contained HTML page (plots embedded as
SVG, no network), CSV tables and JSON, all rendered from :func:`whyclip.store.runs.audit.audit`'s dict."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from whyclip.store.runs.audit import method_label

TEXT_ROWS = 10


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _table(head: tuple, rows: list[tuple]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    return ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in (head, *rows)]


def accuracy_lines(acc: list[dict]) -> list[str]:
    return _table(("scored by", "top-1", "top-5", "images"), [(a["label"], pct(a["top1"]), pct(a["top5"]), a["n"]) for a in acc])


def confusion_lines(pairs: list[dict], limit: int = TEXT_ROWS) -> list[str]:
    if not pairs:
        return ["no confusions: every image's top class is its true class"]
    lines = []
    for p in pairs[:limit]:
        lines.append(f"{p['count']:>5}  predicted {p['predicted']!r} for {p['true']!r}")
        pro = ", ".join(f"{r['text']} ({r['contribution']:+.4f})" for r in p["towards_predicted"][:3])
        con = ", ".join(f"{r['text']} ({r['contribution']:+.4f})" for r in p["towards_true"][:3])
        lines.append(f"       pulled towards {p['predicted']}: {pro or '-'}")
        lines.append(f"       supported {p['true']}: {con or '-'}")
    return lines


def per_class_lines(classes: list[dict], limit: int = TEXT_ROWS) -> list[str]:
    worst = sorted(classes, key=lambda c: (c["top1"] - c["baseline_top1"], c["top1"], c["class"]))[:limit]
    return _table(("class", "images", "descriptors", "baseline", "random words"),
                  [(c["class"], c["n"], pct(c["top1"]), pct(c["baseline_top1"]), pct(c.get("control_top1"))) for c in worst])  # fmt: skip


def to_text(a: dict) -> str:
    run, lib = a["run"], a["library"]
    agg = a["aggregate"]
    out = [f"audit of run {run['name']!r}: library {lib['name']} v{lib['version']} ({lib['classes']} classes, "
           f"{lib['descriptors']} descriptors), {run['n_images']} images from {run['dataset']}; aggregate {agg}", ""]  # fmt: skip
    out += ["accuracy", *accuracy_lines(a["accuracy"]), ""]
    rc = a["controls"]["random_words"]
    out.append(f"random-word control: {rc.get('verdict', rc.get('note'))}")
    d = a["controls"]["deletion"]
    if d.get("images"):
        out.append(
            f"how much the explanation's top {d['k']} descriptors carry ({d['images']} images; a measurement, not a test): "
            f"removing them from the predicted class drops its score by "
            f"{d['score_drop_top']:.4f} and accuracy to {pct(d['accuracy_top_removed'])}; {d['k']} random ones: "
            f"{d['score_drop_random']:.4f}, {pct(d['accuracy_random_removed'])} (before: {pct(d['accuracy_before'])})"
        )
    else:
        out.append(f"deletion: {d.get('note')}")
    out += ["", "classes with the largest loss against the baseline", *per_class_lines(a["per_class"]), ""]
    out += ["most confused (predicted for true)", *confusion_lines(a["confusions"]), ""]
    drivers = [r for r in a["drivers"] if r["top_correct"] + r["top_wrong"]][:TEXT_ROWS]
    out += ["descriptors that decide predictions (times top contributor: correct / wrong; mean margin vs runner-up)"]
    out += _table(("class", "descriptor", "correct", "wrong", "margin"),
                  [(r["class"], r["text"], r["top_correct"], r["top_wrong"], f"{r['mean_margin']:+.4f}") for r in drivers])  # fmt: skip
    h = a["hygiene"]
    out += ["", "hygiene",
            f"  {len(h['shared_texts'])} texts shared by several classes"
            + (f" (most: {h['shared_texts'][0]['text']!r} in {h['shared_texts'][0]['classes']})" if h["shared_texts"] else ""),
            f"  {len(h['near_identical'])} near-identical prompt pairs across classes (cosine >= {a['settings']['near_threshold']})",
            f"  {len(h['flat'])} flat descriptors (similarity barely varies over the images)",
            f"  {len(h['worse_than_baseline'])} classes where the descriptors do worse than the class name",
            *(f"  note: {n}" for n in h["notes"])]  # fmt: skip
    return "\n".join(out)


# -- HTML ------------------------------------------------------------------------------------


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _plots(a: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "whyclip", "font.size": 10})
    colours = {"descriptors": "#3b6ea8", "baseline": "#9aa5b1", "random words": "#d08c3c"}
    plots = {}
    by = {r["method"]: r for r in a["accuracy"]}
    aggs = [m for m in ("mean", "centroid", "max") if m in by]
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    width = 0.26
    for j, (kind, key) in enumerate((("descriptors", "{}"), ("baseline", "baseline"), ("random words", "control:{}"))):
        vals = [100 * by[key.format(m)]["top1"] if key.format(m) in by else 0 for m in aggs]
        bars = ax.bar([i + (j - 1) * width for i in range(len(aggs))], vals, width, label=kind, color=colours[kind])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(aggs)), aggs)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 105)
    ax.legend(frameon=False, ncols=3, loc="upper center", bbox_to_anchor=(0.5, 1.2))
    ax.spines[["top", "right"]].set_visible(False)
    plots["accuracy"] = _svg(fig)
    d = a["controls"]["deletion"]
    if d.get("images"):
        fig, (left, right) = plt.subplots(1, 2, figsize=(6.4, 2.4))
        bars = left.bar(["top", "random"], [d["score_drop_top"], d["score_drop_random"]], color=["#3b6ea8", "#d08c3c"])
        left.bar_label(bars, fmt="%.4f", fontsize=8)
        left.set_title(f"score drop, {d['k']} removed", fontsize=10)
        vals = [100 * d[k] for k in ("accuracy_before", "accuracy_top_removed", "accuracy_random_removed")]
        names = ["before", f"top {d['k']}\nremoved", f"{d['k']} random\nremoved"]
        bars = right.bar(names, vals, color=["#9aa5b1", "#3b6ea8", "#d08c3c"])
        right.bar_label(bars, fmt="%.1f", fontsize=8)
        right.set_title("accuracy (%)", fontsize=10)
        right.set_ylim(0, 105)
        for ax in (left, right):
            ax.spines[["top", "right"]].set_visible(False)
        plots["deletion"] = _svg(fig)
    drivers = [r for r in a["drivers"] if r["top_correct"] + r["top_wrong"]][:15][::-1]
    if drivers:
        fig, ax = plt.subplots(figsize=(6.4, 0.3 * len(drivers) + 0.8))
        labels = [f"{r['class']}: {r['text']}"[:60] for r in drivers]
        ax.barh(labels, [r["top_correct"] for r in drivers], color="#3b6ea8", label="correct")
        ax.barh(labels, [r["top_wrong"] for r in drivers], left=[r["top_correct"] for r in drivers], color="#c0504d", label="wrong")
        ax.set_xlabel("images where it was the predicted class's top contributor")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(frameon=False, ncols=2, loc="lower center", bbox_to_anchor=(0.5, 1.0))
        ax.spines[["top", "right"]].set_visible(False)
        plots["drivers"] = _svg(fig)
    return plots


def to_html(a: dict) -> str:
    """One self-contained page: every plot inline SVG, every number also in a table cell
    (with its full value in ``data-value``)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                             undefined=jinja2.StrictUndefined)  # fmt: skip
    env.filters["pct"] = pct
    template = env.get_template("report_template.html")
    drivers = [r for r in a["drivers"] if r["top_correct"] + r["top_wrong"]]
    return template.render(a=a, plots=_plots(a), drivers=drivers, label=method_label)


# -- CSV and files ---------------------------------------------------------------------------

CSV_TABLES = {
    "accuracy": lambda a: a["accuracy"],
    "per_class": lambda a: a["per_class"],
    "drivers": lambda a: a["drivers"],
    "confusions": lambda a: [
        {"predicted": p["predicted"], "true": p["true"], "count": p["count"], "side": side, "class": r["class"],
         "text": r["text"], "contribution": r["contribution"]}
        for p in a["confusions"] for side in ("towards_predicted", "towards_true") for r in p[side]
    ],  # fmt: skip
    "shared_texts": lambda a: a["hygiene"]["shared_texts"],
    "near_identical": lambda a: a["hygiene"]["near_identical"],
    "flat": lambda a: a["hygiene"]["flat"],
    "worse_than_baseline": lambda a: a["hygiene"]["worse_than_baseline"],
    "controls": lambda a: [{"control": k, **v} for k, v in a["controls"].items()],
}


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, so a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
