"""What-if edits of a library, answered exactly from a stored run: no model, no re-ingest.

A class's score is an aggregate of the image's similarities to that class's descriptors
(docs/method.md), so dropping or adding descriptors of some classes changes those classes'
scores and no other. :class:`WhatIf` scores every image of a run once under one aggregate
(and keeps each image's best few classes); an :class:`Edit` is then answered by rescoring
only the edited classes and comparing them with each image's best unedited class.

* The edited class's score is computed with the same code a re-ingested library would use
  (:func:`~whyclip.store.method.aggregates.class_sums` for mean and centroid, the maximum
  similarity for max), kept descriptors first in their order, then the added ones.
* A class whose every descriptor is dropped (and none added) falls back to its baseline
  prompt, exactly as a library file with an empty class does after ingest; the answer
  says so in ``notes``.
* An added descriptor's prompt is built by the library's own prompt rule; its vector comes
  from the caller (``whyclip whatif`` embeds only the prompts the cache lacks).

:func:`edited_draft` turns an edit into a :class:`~whyclip.store.records.LibraryDraft`
(kept vectors copied, added ones as given) for publishing as a new version.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from whyclip.store.analysis.run_records import RunData
from whyclip.store.analysis.stats import accuracy_figure, mcnemar_exact, verdict, wilson
from whyclip.store.errors import InputError
from whyclip.store.method import AGGREGATES
from whyclip.store.method.aggregates import class_sums
from whyclip.store.method.prompts import RULE_VERSION, build_prompt
from whyclip.store.names import loose_matches
from whyclip.store.records import DraftClass, EncoderInfo, LibraryDraft

if TYPE_CHECKING:  # a loaded version is passed in; nothing here reads the database itself
    from whyclip.store.library import Library

KEEP = 8  # best classes kept per image: an edit of fewer classes never needs a full row again
BLOCK = 256  # images scored at a time when the run is first scored


@dataclass(frozen=True)
class ClassEdit:
    """One class's edit: which of its descriptors stay, and what is added (text, prompt)."""

    position: int
    name: str
    keep: tuple[bool, ...]
    added: tuple[tuple[str, str], ...] = ()

    @property
    def n_after(self) -> int:
        return sum(self.keep) + len(self.added)


@dataclass(frozen=True)
class Edit:
    """A validated edit of a library version (:func:`plan_edit`)."""

    classes: tuple[ClassEdit, ...]
    drops: tuple[tuple[str, str], ...] = ()  # (class, descriptor) as the library spells them
    adds: tuple[tuple[str, str], ...] = ()  # (class, text)

    @property
    def new_prompts(self) -> list[str]:
        """The prompts an answer needs vectors for: every added descriptor's, once."""
        return list(dict.fromkeys(p for c in self.classes for _, p in c.added))

    def echo(self) -> dict[str, Any]:
        """The edit as ``--edits FILE`` takes it (and ``--json`` prints it)."""
        prompts = {(c.name, t): p for c in self.classes for t, p in c.added}
        return {
            "drop": [{"class": c, "descriptor": d} for c, d in self.drops],
            "add": [{"class": c, "text": t, "prompt": prompts[(c, t)]} for c, t in self.adds],
        }


def _rule_version(lib: Library) -> int:
    rule = lib.info.prompt_rule or ""
    try:
        return int(rule.rsplit("/", 1)[1]) if "/" in rule else RULE_VERSION
    except ValueError:
        return RULE_VERSION


def split_pair(lib: Library, value: str, what: str) -> tuple[str, str]:
    """``"CLASS:TEXT"`` -> (CLASS, TEXT), splitting at the colon that leaves a class of the
    library on the left (class names and descriptors may contain colons themselves)."""
    cuts = [i for i, ch in enumerate(value) if ch == ":"]
    if not cuts:
        raise InputError(f"{what} {value!r} has no colon: write CLASS:{'DESCRIPTOR' if what == '--drop' else 'TEXT'}")
    found = [(value[:i], value[i + 1 :]) for i in cuts if loose_matches(value[:i], lib.class_names)]
    if len(found) > 1:
        listed = ", ".join(repr(c) for c, _ in found)
        raise InputError(
            f"{what} {value!r} could split after any of the classes {listed}: use --edits FILE (JSON) instead"
        )
    if not found:
        lib.class_position(value[: cuts[0]])  # raises, naming close matches
    return found[0]


def plan_edit(lib: Library, drops: Sequence[tuple[str, str]] = (), adds: Sequence[tuple[str, str]] = ()) -> Edit:
    """Validate an edit against ``lib``: every class exists (exact, or ignoring case and
    underscores), every dropped descriptor is one of its class's, every added text is new
    to its class. Raises :class:`InputError` (one line, with close matches) otherwise."""
    keep: dict[int, list[bool]] = {}
    added: dict[int, list[tuple[str, str]]] = {}
    echo_drops, echo_adds = [], []
    template, version = lib.info.template, _rule_version(lib)
    for cls, text in drops:
        c = lib.class_position(cls)
        texts = [t for t, _ in lib.class_texts(c)]
        name = lib.class_names[c]
        if text not in texts:
            close = difflib.get_close_matches(text, texts, n=3, cutoff=0.5)
            hint = (
                f"did you mean {', '.join(repr(t) for t in close)}?"
                if close
                else f"its descriptors: {', '.join(repr(t) for t in texts[:6])}{' ...' if len(texts) > 6 else ''}"
                if texts
                else "it has none"
            )
            raise InputError(
                f"class {name!r} has no descriptor {text!r} to drop ({hint}); see the dashboard's Library page "
                "or 'whyclip export'"
            )
        mask = keep.setdefault(c, [True] * len(texts))
        for j, t in enumerate(texts):
            if t == text:
                mask[j] = False
        if (name, text) not in echo_drops:
            echo_drops.append((name, text))
    for cls, text in adds:
        c = lib.class_position(cls)
        name = lib.class_names[c]
        text = text.strip() if isinstance(text, str) else ""
        if not text:
            raise InputError(f"an added descriptor of class {name!r} is empty: give its text, CLASS:TEXT")
        texts = [t for t, _ in lib.class_texts(c)]
        mine = added.setdefault(c, [])
        if text in texts and keep.get(c, [True] * len(texts))[texts.index(text)]:
            raise InputError(f"class {name!r} already has the descriptor {text!r}: nothing to add")
        if any(t == text for t, _ in mine):
            continue  # the same addition twice is one addition
        mine.append((text, build_prompt(template, name, text, version)))
        echo_adds.append((name, text))
    out = []
    for c in sorted(set(keep) | set(added)):
        n = len(lib.class_texts(c))
        out.append(ClassEdit(c, lib.class_names[c], tuple(keep.get(c, [True] * n)), tuple(added.get(c, []))))
    return Edit(tuple(out), tuple(echo_drops), tuple(echo_adds))


def read_edits(data: object) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Drops and adds from an ``--edits`` document: ``{"drop": [...], "add": [...]}``, each
    item ``{"class": C, "descriptor": D}`` / ``{"class": C, "text": T}`` or ``[C, D]``."""
    if not isinstance(data, dict) or set(data) - {"drop", "add"}:
        raise InputError(
            'an edits file is a JSON object {"drop": [...], "add": [...]}, e.g. '
            '{"drop": [{"class": "banana", "descriptor": "yellow peel"}], "add": [["banana", "a green tip"]]}'
        )
    out = []
    for key, field_name in (("drop", "descriptor"), ("add", "text")):
        items = data.get(key, [])
        pairs = []
        for item in items if isinstance(items, list) else [None]:
            if isinstance(item, dict) and isinstance(item.get("class"), str) and isinstance(item.get(field_name), str):
                pairs.append((item["class"], item[field_name]))
            elif isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item):
                pairs.append((item[0], item[1]))
            else:
                raise InputError(
                    f'every "{key}" item of an edits file is {{"class": ..., "{field_name}": ...}} or '
                    f'["class", "{field_name}"], not {item!r}'
                )
        out.append(pairs)
    return out[0], out[1]


def _added_vectors(
    edit: ClassEdit, vectors: dict[str, tuple[np.ndarray, float]], dim: int
) -> tuple[np.ndarray, np.ndarray]:
    missing = [p for _, p in edit.added if p not in vectors]
    if missing:
        raise InputError(
            f"no vector for the added prompt {missing[0]!r}: embed it first (whyclip whatif --add embeds it)"
        )
    vecs = np.array([vectors[p][0] for _, p in edit.added], dtype=np.float32).reshape(len(edit.added), dim)
    return vecs, np.array([vectors[p][1] for _, p in edit.added], dtype=np.float32)


@dataclass
class Rescored:
    """Every image's predicted class and its score after an edit, and the true class's score."""

    predicted: np.ndarray
    score: np.ndarray
    true_score: np.ndarray
    fallback: list[str] = field(default_factory=list)  # classes left with no descriptor


class WhatIf:
    """A run scored once by its library version under one aggregate, answering edits.

    It keeps the (N, C) scores and each image's ``KEEP`` best classes: an edit of ``E``
    classes rescores those ``E`` columns only and compares them with the image's best
    unedited class (found in its kept best classes, or, when every kept class is edited,
    in its full row). Nothing here is mutated by an edit."""

    def __init__(self, run: RunData, lib: Library, aggregate: str | None = None):
        agg = aggregate or lib.info.aggregate
        if agg not in AGGREGATES:
            raise InputError(f"unknown aggregate {agg!r}: choose one of {', '.join(AGGREGATES)}")
        if run.info.library_id != lib.info.id:
            raise InputError(
                f"run {run.info.name!r} was made with library {run.info.library_name!r} "
                f"v{run.info.library_version}, not "
                f"v{lib.info.version}: a what-if edits the version the run scored (omit --version), or run "
                f"'whyclip eval DATASET --library {lib.info.name} --version {lib.info.version}' first"
            )
        n = len(run.paths)
        if n == 0:
            raise InputError(f"run {run.info.name!r} has no images: nothing to recompute")
        if run.vectors.ndim != 2 or run.vectors.shape != (n, lib.info.dim):
            raise InputError(
                f"run {run.info.name!r} stored no usable image vectors (shape {run.vectors.shape}, library dimension "
                f"{lib.info.dim}): re-run 'whyclip eval DATASET --library {lib.info.name}' to store them"
            )
        self.run, self.lib, self.aggregate = run, lib, agg
        self.images = np.ascontiguousarray(run.vectors, dtype=np.float32)
        self.labels = np.asarray(run.labels, dtype=np.int64)
        c = len(lib.class_names)
        self.scores = np.empty((n, c), dtype=np.float32)
        for start in range(0, n, BLOCK):
            self.scores[start : start + BLOCK] = lib.scores(self.images[start : start + BLOCK], agg)
        k = min(KEEP, c)
        part = np.argpartition(-self.scores, k - 1, axis=1)[:, :k] if k < c else np.tile(np.arange(c), (n, 1))
        part_scores = np.take_along_axis(self.scores, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)  # best first; ties: lower class first
        self.top = np.take_along_axis(part, order, axis=1)
        self.top_scores = np.take_along_axis(part_scores, order, axis=1)
        rows = np.arange(n)
        self.before = Rescored(
            self.top[:, 0].copy(),
            self.top_scores[:, 0].astype(np.float64),
            self.scores[rows, self.labels].astype(np.float64),
        )

    # -- the edited classes' scores ----------------------------------------------------

    def _class_rows(self, edit: ClassEdit, vectors: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """An edited class's unit rows and raw norms: kept descriptors in order, then added."""
        lib = self.lib
        keep = np.flatnonzero(np.array(edit.keep, dtype=bool)) + int(lib.matrices.offsets[edit.position])
        unit = np.asarray(lib.vectors[keep], dtype=np.float32).reshape(len(keep), lib.info.dim)
        norms = np.asarray(lib.files.norms[keep], dtype=np.float32)
        if edit.added:
            extra, extra_norms = _added_vectors(edit, vectors, lib.info.dim)
            unit, norms = np.concatenate([unit, extra]), np.concatenate([norms, extra_norms])
        return unit, norms

    def edited_scores(self, edits: tuple[ClassEdit, ...], vectors: dict[str, tuple[np.ndarray, float]]) -> np.ndarray:
        """(N, E) scores of the edited classes: what their columns of a re-ingested library
        hold. One matrix product for all of them (mean and centroid: the classes' vectors,
        made by the same :func:`class_sums` as ingest; max: every row, then per-class maxima)."""
        parts = [self._class_rows(e, vectors) for e in edits]
        baseline = np.asarray(self.lib.matrices.baseline, dtype=np.float32)[[e.position for e in edits]]
        counts = np.array([len(u) for u, _ in parts], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        unit = np.concatenate([u for u, _ in parts]) if counts.sum() else np.zeros((0, self.lib.info.dim), np.float32)
        norms = np.concatenate([n for _, n in parts]) if counts.sum() else np.zeros(0, np.float32)
        out: np.ndarray
        if self.aggregate == "mean":
            out = (self.images @ class_sums(unit, offsets, baseline).T).astype(np.float64)
            return out
        if self.aggregate == "centroid":
            out = (self.images @ class_sums(unit, offsets, baseline, norms=norms, normalise=True).T).astype(np.float64)
            return out
        out = self.images @ baseline.T  # max; an empty class keeps its baseline score
        nonempty = np.flatnonzero(counts)
        if len(nonempty):
            out[:, nonempty] = np.maximum.reduceat(self.images @ unit.T, offsets[:-1][nonempty], axis=1)
        return out.astype(np.float64)

    def rescore(self, edit: Edit, vectors: dict[str, tuple[np.ndarray, float]] | None = None) -> Rescored:
        """Every image's prediction after ``edit``; only the edited classes are rescored."""
        vectors = vectors or {}
        if not edit.classes:
            return self.before
        edited = np.array([e.position for e in edit.classes], dtype=np.int64)
        new = self.edited_scores(edit.classes, vectors)  # (N, E)
        n = len(self.images)
        rows = np.arange(n)
        # the best unedited class of each image: the first of its kept best classes not edited
        free = ~np.isin(self.top, edited)
        first = np.argmax(free, axis=1)
        other = self.top[rows, first].copy()
        other_score = self.top_scores[rows, first].astype(np.float64)
        full = np.flatnonzero(~free.any(axis=1))
        if len(full) and len(edited) < self.scores.shape[1]:
            masked = self.scores[full].astype(np.float64)
            masked[:, edited] = -np.inf
            other[full] = np.argmax(masked, axis=1)
            other_score[full] = masked[np.arange(len(full)), other[full]]
        elif len(full):  # every class edited
            other[full], other_score[full] = -1, -np.inf
        cand = np.concatenate([other_score[:, None], new], axis=1)
        classes = np.concatenate([other[:, None], np.broadcast_to(edited, (n, len(edited)))], axis=1)
        best = cand.max(axis=1)
        at_best = (cand == best[:, None]) & (classes >= 0)
        predicted = np.where(at_best, classes, np.iinfo(np.int64).max).min(axis=1)  # ties: the lower class
        true_score = self.before.true_score.copy()
        where = {int(c): j for j, c in enumerate(edited)}
        hit = np.isin(self.labels, edited)
        if hit.any():
            cols = np.array([where[int(y)] for y in self.labels[hit]])
            true_score[hit] = new[np.flatnonzero(hit), cols]
        fallback = [e.name for e in edit.classes if e.n_after == 0]
        return Rescored(predicted, best, true_score, fallback)

    # -- the answer ----------------------------------------------------------------------

    def answer(self, edit: Edit, vectors: dict[str, tuple[np.ndarray, float]] | None = None) -> dict[str, Any]:
        """The what-if: flips both ways, accuracy before and after with Wilson intervals,
        McNemar's exact paired p-value, per edited class, as plain data (``--json``)."""
        after = self.rescore(edit, vectors)
        lib, names, y = self.lib, self.lib.class_names, self.labels
        ok_before, ok_after = self.before.predicted == y, after.predicted == y
        test = mcnemar_exact(ok_before, ok_after)
        a, b = accuracy_figure(ok_before), accuracy_figure(ok_after)
        sig = verdict(test["p_value"])

        def flip(i: int) -> dict[str, Any]:
            return {
                "path": self.run.paths[i],
                "true": names[y[i]],
                "before": names[self.before.predicted[i]],
                "before_score": float(self.before.score[i]),
                "after": names[after.predicted[i]],
                "after_score": float(after.score[i]),
                "true_score_before": float(self.before.true_score[i]),
                "true_score_after": float(after.true_score[i]),
            }

        right_wrong = [flip(int(i)) for i in np.flatnonzero(ok_before & ~ok_after)]
        wrong_right = [flip(int(i)) for i in np.flatnonzero(~ok_before & ok_after)]
        moved = int(np.sum(~ok_before & ~ok_after & (self.before.predicted != after.predicted)))
        diff = b["accuracy"] - a["accuracy"]
        statement = (
            f"top-1 {100 * a['accuracy']:.1f}% before, {100 * b['accuracy']:.1f}% after ({100 * diff:+.1f} points; "
            f"{len(wrong_right)} wrong->right, {len(right_wrong)} right->wrong; McNemar p = "
            f"{test['p_value']:.3g}, {sig})"
        )
        classes = []
        for e in edit.classes:
            mask = y == e.position
            k = int(mask.sum())
            classes.append(
                {
                    "class": e.name,
                    "descriptors_before": len(e.keep),
                    "descriptors_after": e.n_after,
                    "dropped": len(e.keep) - sum(e.keep),
                    "added": len(e.added),
                    "images": k,
                    "accuracy_before": float(ok_before[mask].mean()) if k else None,
                    "accuracy_after": float(ok_after[mask].mean()) if k else None,
                    "ci95_before": wilson(int(ok_before[mask].sum()), k),
                    "ci95_after": wilson(int(ok_after[mask].sum()), k),
                    "fallback": e.n_after == 0,
                }
            )
        notes = [
            f"class {c!r} has no descriptor left: it is scored by its baseline prompt "
            f"{lib.baseline_prompts[names.index(c)]!r}, as a class with no descriptors in a library file is scored"
            for c in after.fallback
        ]
        return {
            "run": {"name": self.run.info.name, "id": self.run.info.id, "dataset": self.run.info.dataset},
            "library": {
                "name": lib.info.name,
                "version": lib.info.version,
                "classes": len(names),
                "logit_scale": lib.info.logit_scale,  # S = score x this: what people read
            },
            "aggregate": self.aggregate,
            "n": len(y),
            "edit": edit.echo(),
            "accuracy_before": a,
            "accuracy_after": b,
            "difference": diff,
            "p_value": test["p_value"],
            "significant": sig == "significant",
            "verdict": sig,
            "statement": statement,
            "flips": {"right_to_wrong": right_wrong, "wrong_to_right": wrong_right},
            "changed_between_wrong": moved,
            "classes": classes,
            "notes": notes,
        }


def what_if(
    run: RunData,
    lib: Library,
    edit: Edit,
    vectors: dict[str, tuple[np.ndarray, float]] | None = None,
    aggregate: str | None = None,
) -> dict[str, Any]:
    """One what-if answer (build a :class:`WhatIf` once to answer many edits)."""
    return WhatIf(run, lib, aggregate).answer(edit, vectors)


def edited_draft(
    lib: Library,
    edit: Edit,
    vectors: dict[str, tuple[np.ndarray, float]] | None = None,
    truncated: dict[str, bool] | None = None,
    note: str = "",
) -> LibraryDraft:
    """The edited library as a draft of the next version of its name: every class in its
    place, kept descriptors with their stored prompts and vectors (copied, not re-embedded),
    added ones after them with ``vectors``; template, baseline, aggregate and encoder as
    the version's. ``truncated`` marks added prompts over the encoder's token limit."""
    vectors, truncated = vectors or {}, truncated or {}
    info, dim = lib.info, lib.info.dim
    by_class = {e.position: e for e in edit.classes}
    flags = lib.truncated_flags()
    offsets = lib.matrices.offsets
    rows: dict[str, int] = {}
    vecs: list[np.ndarray] = []
    norms: list[float] = []
    classes: list[DraftClass] = []

    def put(prompt: str, vector: np.ndarray, norm: float) -> None:
        if prompt not in rows:
            rows[prompt] = len(vecs)
            vecs.append(np.asarray(vector, dtype=np.float32))
            norms.append(float(norm))

    for c, name in enumerate(lib.class_names):
        lo = int(offsets[c])
        texts = lib.class_texts(c)
        e = by_class.get(c)
        keep = e.keep if e else (True,) * len(texts)
        descriptors, prompts, trunc = [], [], []
        for j, ((text, prompt), kept) in enumerate(zip(texts, keep, strict=True)):
            if kept:
                descriptors.append(text)
                prompts.append(prompt)
                trunc.append(flags[lo + j] if flags else False)
                put(prompt, lib.vectors[lo + j], lib.files.norms[lo + j])
        if e and e.added:
            extra, extra_norms = _added_vectors(e, vectors, dim)
            for (text, prompt), v, nm in zip(e.added, extra, extra_norms, strict=True):
                descriptors.append(text)
                prompts.append(prompt)
                trunc.append(bool(truncated.get(prompt, False)))
                put(prompt, v, nm)
        classes.append(DraftClass(name, lib.baseline_prompts[c], descriptors, prompts, trunc))
    for c, prompt in enumerate(lib.baseline_prompts):  # a baseline row's norm is never stored: only its vector
        put(prompt, lib.matrices.baseline[c], 1.0)
    parts = [f"drop {c}: {d}" for c, d in edit.drops] + [f"add {c}: {t}" for c, t in edit.adds]
    return LibraryDraft(
        name=info.name,
        encoder=EncoderInfo(info.encoder_id, info.encoder_name, dim, info.logit_scale),
        template=info.template,
        baseline_template=info.baseline_template,
        classes=classes,
        prompt_rows=rows,
        vectors=np.stack(vecs).reshape(len(vecs), dim) if vecs else np.zeros((0, dim), np.float32),
        norms=np.array(norms, dtype=np.float32),
        source=f"what-if edit of {info.name} v{info.version}: " + "; ".join(parts),
        source_sha256="",
        aggregate=info.aggregate,
        index_factory=info.index_factory or None,
        note=note,
    )
