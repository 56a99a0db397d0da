"""The audit's controls whose outcome is not known in advance, each compared with the
library's descriptors over the same images (:mod:`.stats`): the class name alone, the
name/description split, the swap, random words from a general vocabulary and shuffled
descriptor words. Read from a stored run; a run made before a control existed says so.
"""

from __future__ import annotations

import shlex
from typing import Any

import numpy as np

from whyclip.store.analysis.name_split import bootstrap_share, shares
from whyclip.store.analysis.run_records import BARE, BASELINE, CONTROL, FUDD, SWAP, WORDS, RunData
from whyclip.store.analysis.stats import bootstrap_ci, compare, mcnemar_exact, paired_bootstrap, verdict, wilson


def no_fudd(run: RunData) -> str:
    """Why a run has no FuDD figures, with the commands that give it some (the real names)."""
    lib, data = shlex.quote(run.info.library_name), shlex.quote(run.info.dataset)
    return (
        f"this run has no FuDD re-ranking: store pair descriptors with 'whyclip ingest-pairs PAIRS --library {lib}', "
        f"then run 'whyclip eval {data} --library {lib}' again"
    )


OLD_RUN = "this run was made before whyclip stored this control: run 'whyclip eval' again to get it"


def correct(run: RunData, method: str) -> np.ndarray:
    """Whether each image's true class came first under ``method``, which the run stored."""
    ok: np.ndarray = run.results[method].true_rank == 1
    return ok


def correct_if_stored(run: RunData, method: str) -> np.ndarray | None:
    """:func:`correct`, or None for a control or re-ranking this run did not store."""
    return correct(run, method) if method in run.results else None


def baseline(run: RunData, agg: str) -> dict[str, Any]:
    c = compare("the class name alone", correct(run, agg), correct(run, BASELINE))
    c["verdict"] = c["statement"] + (
        ": the descriptors change accuracy"
        if c["significant"]
        else ": no evidence that the descriptors do better or worse than the name"
    )
    return c


def swap(run: RunData, agg: str) -> dict[str, Any]:
    other = correct_if_stored(run, SWAP + agg)
    if other is None:
        return {"note": OLD_RUN}
    c = compare("swapped descriptors", correct(run, agg), other)
    c["permutation"] = run.info.details.get("controls", {}).get("swap_permutation")
    c["verdict"] = c["statement"] + (
        ": the descriptors carry the decision"
        if c["significant"] and c["difference"] > 0
        else ": the descriptors do not carry the decision (another class's do as well)"
    )
    return c


def shuffled_words(run: RunData, agg: str) -> dict[str, Any]:
    other = correct_if_stored(run, CONTROL + agg)
    if other is None:
        return {"note": "this run has no shuffled-descriptor-words control"}
    c = compare("shuffled descriptor words", correct(run, agg), other)
    c["verdict"] = c["statement"] + (
        ": what the descriptors say matters"
        if c["significant"] and c["difference"] > 0
        else ": the descriptors do not beat their own words shuffled"
    )
    return c


def random_words(run: RunData, agg: str, seed: int = 0) -> dict[str, Any]:
    """Random words from a general vocabulary, ``draws`` seeded draws: their mean accuracy
    and sd over the draws, an interval for the mean (bootstrap over images) and a paired
    bootstrap test of the descriptors against the per-image mean over the draws."""
    draws = sorted(
        int(m[len(WORDS) :].split(":")[0]) for m in run.results if m.startswith(WORDS) and m.endswith(":" + agg)
    )
    if not draws:
        return {"note": OLD_RUN}
    mine = correct(run, agg)
    per_draw = np.array([correct(run, f"{WORDS}{j}:{agg}") for j in draws])  # (draws, images)
    acc = per_draw.mean(axis=1)
    per_image = per_draw.mean(axis=0)
    test = paired_bootstrap(mine, per_image, seed)
    sig = verdict(test["p_value"])
    mean, sd = float(acc.mean()), float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
    ok = sig == "significant" and test["difference"] > 0
    sentence = (
        f"descriptors {100 * mine.mean():.1f}% vs random words {100 * mean:.1f}% ± {100 * sd:.1f} "
        f"({len(draws)} draws; paired bootstrap p = {test['p_value']:.3g}, {sig})"
        + (
            ": the descriptors beat random words"
            if ok
            else (
                ": the descriptors do not beat random words, so a gain over the class name may not come from "
                "what they say"
            )
        )
    )
    return {
        "draws": len(draws),
        "accuracy_mean": mean,
        "accuracy_sd": sd,
        "accuracy_per_draw": acc.tolist(),
        "ci95": bootstrap_ci(per_image, seed),
        "descriptors_accuracy": float(mine.mean()),
        "descriptors_ci95": wilson(int(mine.sum()), len(mine)),
        "difference": test["difference"],
        "difference_ci95": test["ci95"],
        "p_value": test["p_value"],
        "significant": sig == "significant",
        "per_draw_p_values": [mcnemar_exact(mine, d)["p_value"] for d in per_draw],
        "vocabulary": run.info.details.get("controls", {}).get("vocabulary"),
        "verdict": sentence,
    }


def name_description(run: RunData, agg: str, class_names: list[str], seed: int = 0) -> dict[str, Any]:
    """How much of the true class's score the name alone gives and how much the descriptor
    content adds (:mod:`.name_split`), and the share of decisions the descriptors change
    relative to the class name alone (McNemar on the same images)."""
    split = run.info.details.get("controls", {}).get("name_description", {}).get(agg)
    if split is None:
        return {"note": OLD_RUN}
    name_share, desc_share = shares(split)
    mine, name = run.results[agg], run.results[BASELINE]
    changed = mine.predicted != name.predicted
    ok_mine, ok_name = mine.true_rank == 1, name.true_rank == 1
    test = mcnemar_exact(ok_mine, ok_name)
    sig = verdict(test["p_value"])
    per_class = []
    for c in np.unique(run.labels):
        mask = run.labels == c
        ns, ds = shares(split, mask)
        per_class.append(
            {
                "class": class_names[c],
                "n": int(mask.sum()),
                "name_share": ns,
                "description_share": ds,
                "decisions_changed": float(changed[mask].mean()),
            }
        )
    adds = sig == "significant"
    sentence = (
        f"the class name alone gives {100 * name_share:.0f}% of the true class's score and the descriptor content "
        f"{100 * desc_share:.0f}%; the descriptors change {100 * changed.mean():.1f}% of decisions relative to "
        f"the name alone ({test['only_first']} wrong to right, {test['only_second']} right to wrong; McNemar p = "
        f"{test['p_value']:.3g}, {sig})"
        + (
            ": the descriptors change the outcome"
            if adds
            else ": the descriptors add nothing measurable beyond the name"
        )
    )
    return {
        "name_share": name_share,
        "description_share": desc_share,
        "ci95": bootstrap_share(split, seed),
        "explained": split["explained"],
        "coefficients": {"name": split["a"], "description": split["b"]},
        "decisions_changed": float(changed.mean()),
        "decisions_changed_ci95": wilson(int(changed.sum()), len(changed)),
        "wrong_to_right": test["only_first"],
        "right_to_wrong": test["only_second"],
        "p_value": test["p_value"],
        "significant": adds,
        "per_class": per_class,
        "bare_descriptors": _bare(run, agg),
        "verdict": sentence,
    }


def _bare(run: RunData, agg: str) -> dict[str, Any] | None:
    other = correct_if_stored(run, BARE + agg)
    return None if other is None else compare("the descriptors without the class name", correct(run, agg), other)


def _paired(name: str, mine: np.ndarray, other: np.ndarray) -> dict[str, Any]:
    test = mcnemar_exact(mine, other)
    acc = float(other.mean()) if len(other) else 0.0
    return {
        "against": name,
        "accuracy": acc,
        "ci95": wilson(int(other.sum()), len(other)),
        "difference": float(mine.mean()) - acc if len(mine) else 0.0,
        "only_fudd": test["only_first"],
        "only_other": test["only_second"],
        "p_value": test["p_value"],
        "significant": verdict(test["p_value"]) == "significant",
    }


def fudd_summary(run: RunData, agg: str) -> dict[str, Any]:
    """FuDD's re-ranking with the version's pair descriptors against the class name alone
    and against the descriptors' own ranking (McNemar on the same images); images it fixed
    and broke relative to the ranking it re-ranked."""
    mine = correct_if_stored(run, FUDD)
    if mine is None:
        return {"note": no_fudd(run)}
    info = run.info.details.get("fudd", {})
    base = info.get("base", agg)
    descriptors, name = correct(run, base), correct(run, BASELINE)
    vs_desc, vs_name = _paired(f"descriptors ({base})", mine, descriptors), _paired("the class name alone", mine, name)
    sig = verdict(vs_desc["p_value"])
    sentence = (
        f"FuDD {100 * mine.mean():.1f}% vs descriptors ({base}) {100 * descriptors.mean():.1f}% top-1 "
        f"({vs_desc['only_fudd']} fixed, {vs_desc['only_other']} broken; McNemar p = {vs_desc['p_value']:.3g}, {sig}) "
        f"and vs the class name {100 * name.mean():.1f}% (p = {vs_name['p_value']:.3g}, {verdict(vs_name['p_value'])})"
    )
    return {
        "accuracy": float(mine.mean()),
        "ci95": wilson(int(mine.sum()), len(mine)),
        "n": len(mine),
        "base": base,
        "top_k": info.get("top_k"),
        "pairs": info.get("pairs"),
        "fixed": vs_desc["only_fudd"],
        "broken": vs_desc["only_other"],
        "p_value": vs_desc["p_value"],
        "significant": sig == "significant",
        "vs_descriptors": vs_desc,
        "vs_baseline": vs_name,
        "verdict": sentence,
    }
