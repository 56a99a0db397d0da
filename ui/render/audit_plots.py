"""The audit report's plots, as inline SVG (matplotlib, no network): accuracy with its 95%
interval bars, the name/description split per class, the deletion measurement, the drivers
and the calibration's reliability diagram."""

from __future__ import annotations

import io

import numpy as np

BLUE, GREY, ORANGE, RED, GREEN, PURPLE = "#3b6ea8", "#9aa5b1", "#d08c3c", "#c0504d", "#5b9f6a", "#8a6bb0"


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _accuracy(a: dict, plt) -> str:
    """Top-1 of the audited aggregate by every way of scoring, with interval bars (Wilson;
    for the random-word draws, their sd)."""
    agg = a["aggregate"]
    by = {r["method"]: r for r in a["accuracy"]}
    bars = [
        (name, by[m]["top1"], by[m]["ci95"], colour)
        for name, m, colour in (
            ("descriptors", agg, BLUE),
            ("class name", "baseline", GREY),
            ("no name\n(bare)", "bare:" + agg, GREEN),
            ("swapped", "swap:" + agg, PURPLE),
            ("shuffled\nwords", "control:" + agg, ORANGE),
            ("FuDD\npairs", "fudd", "#1f4e5f"),
        )
        if m in by
    ]
    rw = a["controls"].get("random_words", {})
    if "accuracy_mean" in rw:
        m, sd = rw["accuracy_mean"], rw["accuracy_sd"]
        bars.insert(
            -1 if len(bars) > 1 else len(bars),
            (f"random words\n({rw['draws']} draws)", m, [max(0, m - sd), min(1, m + sd)], RED),
        )
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    x = np.arange(len(bars))
    vals = np.array([100 * b[1] for b in bars])
    lows = np.maximum(0, vals - np.array([100 * b[2][0] for b in bars]))  # rounding can put a bound a hair inside
    highs = np.maximum(0, np.array([100 * b[2][1] for b in bars]) - vals)
    drawn = ax.bar(x, vals, 0.6, color=[b[3] for b in bars], yerr=[lows, highs], capsize=4, ecolor="#1f2933")
    ax.bar_label(drawn, fmt="%.1f", fontsize=8, padding=2)
    ax.set_xticks(x, [b[0] for b in bars], fontsize=8)
    ax.set_ylabel(f"top-1 accuracy (%), {agg}")
    ax.set_ylim(0, 110)
    ax.set_title("bars: 95% interval (Wilson); random words: ± sd over draws", fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _split(nd: dict, plt) -> str | None:
    rows = nd.get("per_class", [])[:25][::-1]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 0.28 * len(rows) + 1.0))
    labels = [f"{r['class']} (n={r['n']})"[:50] for r in rows]
    names = [100 * r["name_share"] for r in rows]
    ax.barh(labels, names, color=GREY, label="class name")
    ax.barh(labels, [100 * r["description_share"] for r in rows], left=names, color=BLUE, label="descriptor content")
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the true class's score (%)")
    ax.legend(frameon=False, ncols=2, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _deletion(d: dict, scale: float, plt) -> str:
    fig, (left, right) = plt.subplots(1, 2, figsize=(6.4, 2.4))
    drops = [d["score_drop_top"] * scale, d["score_drop_random"] * scale]
    bars = left.bar(["top", "random"], drops, color=[BLUE, ORANGE])
    left.bar_label(bars, fmt="%.2f", fontsize=8)
    left.set_title(f"drop in S, {d['k']} removed", fontsize=10)
    vals = [100 * d[k] for k in ("accuracy_before", "accuracy_top_removed", "accuracy_random_removed")]
    names = ["before", f"top {d['k']}\nremoved", f"{d['k']} random\nremoved"]
    bars = right.bar(names, vals, color=[GREY, BLUE, ORANGE])
    right.bar_label(bars, fmt="%.1f", fontsize=8)
    right.set_title("accuracy (%)", fontsize=10)
    right.set_ylim(0, 105)
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _drivers(rows: list[dict], plt) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 0.3 * len(rows) + 0.8))
    labels = [f"{r['class']}: {r['text']}"[:60] for r in rows]
    ax.barh(labels, [r["top_correct"] for r in rows], color=BLUE, label="correct")
    ax.barh(labels, [r["top_wrong"] for r in rows], left=[r["top_correct"] for r in rows], color=RED, label="wrong")
    ax.set_xlabel("images where it was the predicted class's top contributor")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(frameon=False, ncols=2, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def reliability(cal: dict, plt) -> str:
    return _svg(_reliability_figure(cal, plt))


def _reliability_figure(cal: dict, plt):
    """Reliability diagram: per confidence bin (equal width), accuracy against mean
    confidence, before calibration and (when there is one) after; a marker's area follows
    its bin's image count. The diagonal is perfect calibration."""
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    ax.plot([0, 1], [0, 1], color=GREY, linestyle="--", linewidth=1, label="perfect calibration")
    sides = [("before", ORANGE, "library's probabilities" if not cal.get("calibrated") else "before")]
    if cal.get("calibrated"):
        sides.append(("after", BLUE, f"after (T = {cal['temperature']:.3g})"))
    total = max(1, sum(b["before"]["count"] for b in cal["bins"]))
    for key, colour, label in sides:
        bins = [b[key] for b in cal["bins"] if b[key]["count"]]
        x, y = [b["confidence"] for b in bins], [b["accuracy"] for b in bins]
        ax.plot(x, y, color=colour, linewidth=1.2, label=f"{label}, ECE {cal['ece_' + key]:.3f}")
        ax.scatter(x, y, s=[12 + 200 * b["count"] / total for b in bins], color=colour, zorder=3)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"{cal['n_bins']} equal-width bins; {cal['measured_on']}"[:90], fontsize=7)
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def reliability_figure(cal: dict, path) -> None:
    """The reliability diagram as a file (PNG, SVG or PDF by its suffix), for ``whyclip calibrate --plot``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = _reliability_figure(cal, plt)
    fig.savefig(path, bbox_inches="tight", dpi=150)
    plt.close(fig)


def plots(a: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "whyclip", "font.size": 10})
    out = {"accuracy": _accuracy(a, plt)}
    split = _split(a["controls"].get("name_description", {}), plt)
    if split:
        out["split"] = split
    if a["controls"]["deletion"].get("images"):
        out["deletion"] = _deletion(a["controls"]["deletion"], a["library"]["logit_scale"], plt)
    drivers = [r for r in a["drivers"] if r["top_correct"] + r["top_wrong"]][:15][::-1]
    if drivers:
        out["drivers"] = _drivers(drivers, plt)
    if a.get("calibration", {}).get("bins"):
        out["reliability"] = reliability(a["calibration"], plt)
    return out
