"""Explanations: small dataclasses, built from exact scores, serialisable to the JSON
schema documented in docs/explanations.md, and printable as text."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from whyclip.store.method.maps import ImageMaps


@dataclass(frozen=True)
class DescriptorScore:
    """One descriptor of a class and the image's similarity to its prompt (raw cosine)."""

    descriptor: str
    prompt: str
    similarity: float
    scaled: float  # similarity x logit scale, the S(...) shown to people
    weight: float  # its weight in the class score (score = sum of weight x similarity)
    fallback: bool = False  # the class has no descriptors; this is its baseline prompt


@dataclass(frozen=True)
class ClassScore:
    """A class's exact score (aggregate of its similarities) and its evidence."""

    name: str
    score: float
    probability: float
    rank: int
    descriptors: list[DescriptorScore] = field(default_factory=list)
    baseline_score: float = 0.0  # the same class scored by its class-name prompt alone
    baseline_probability: float = 0.0
    uncalibrated_probability: float | None = None  # set when ``probability`` is calibrated
    name_share: float | None = None  # of this score, for this image: the class name alone
    description_share: float | None = None  # ... and what the descriptor content adds
    descriptors_not_listed: int = 0  # descriptors past the listing bound (the score counts them all)


@dataclass(frozen=True)
class BaselineScore:
    """A class scored by its class-name prompt alone ("a photo of a {class}.")."""

    name: str
    score: float
    probability: float


@dataclass(frozen=True)
class ContrastRow:
    """One descriptor text in the contrast of classes a and b.

    ``a`` / ``b`` are its similarities under each class (None where the class lacks it).
    ``contribution`` is its share of ``score(a) - score(b)``, measured from the pair's
    midpoint (see :func:`midpoint_rule`); the rows add up to exactly that difference.
    ``favours`` is the class it pulls toward (positive: a, negative: b, ``-`` for none), and
    ``of`` the class whose descriptor it is (a, b, or ``both`` for a text both classes have).
    """

    descriptor: str
    a: float | None
    b: float | None
    contribution: float
    favours: str
    of: str = ""  # "" only in answers from before the field: derived from a / b then

    def owner(self, a: str, b: str) -> str:
        """Whose descriptor this is: ``a``, ``b`` or ``both``."""
        if self.of:
            return self.of
        return "both" if self.a is not None and self.b is not None else a if self.a is not None else b


@dataclass(frozen=True)
class PairFeatureScore:
    """One feature of a pair's contrastive descriptors: how it looks on a and on b, and the
    image's similarity (raw cosine) to each prompt; it favours the more similar side."""

    attribute: str
    a: str
    b: str
    prompt_a: str
    prompt_b: str
    similarity_a: float
    similarity_b: float
    favours: str


@dataclass(frozen=True)
class PairDescriptors:
    """The contrastive pair descriptors stored for classes a and b (FuDD), scored on the
    image: ``mean_a`` / ``mean_b`` are its mean similarity to each side's descriptions (the
    differential scores FuDD ranks by), ``favours`` the class with the higher one."""

    a: str
    b: str
    features: list[PairFeatureScore]
    mean_a: float
    mean_b: float
    favours: str
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Contrast:
    a: str
    b: str
    score_a: float
    score_b: float
    rows: list[ContrastRow]
    pair_descriptors: PairDescriptors | None = None  # None: no pair descriptors stored for a and b


@dataclass(frozen=True)
class Retrieved:
    """A library-wide nearest descriptor, from the FAISS index."""

    class_name: str
    descriptor: str
    prompt: str
    similarity: float
    descriptor_id: int


@dataclass(frozen=True)
class Explanation:
    image: str
    library: str
    version: int
    encoder: str
    aggregate: str
    logit_scale: float
    n_classes: int
    classes: list[ClassScore]
    baseline: list[BaselineScore]
    contrast: Contrast | None
    retrieved: list[Retrieved]
    calibration: dict[str, Any] | None = None  # the stored calibration the probabilities use (explain --calibrated)
    name_description: dict[str, Any] | None = None  # the per-image fit behind name_share, or a note why there is none
    retrieval: dict[str, Any] | None = None  # how ``retrieved`` was found: exact, index, recall_at_10, calibrated_on
    maps: ImageMaps | None = None  # where in the image, when asked for (explain --maps)

    @property
    def predicted(self) -> str:
        return self.classes[0].name

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object: see docs/explanations.md."""
        out = asdict(self)
        out["predicted"] = self.predicted
        out["baseline_predicted"] = self.baseline[0].name if self.baseline else None
        for item in out["classes"]:
            item["class"] = item.pop("name")
            if not item["descriptors_not_listed"]:  # a key only where the listing was cut
                del item["descriptors_not_listed"]
        for item in out["baseline"]:
            item["class"] = item.pop("name")
        for item in out["retrieved"]:
            item["class"] = item.pop("class_name")
        if self.maps is None:
            del out["maps"]  # a key only where maps were asked for
        else:
            out["maps"] = self.maps.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Explanation:
        """The inverse of :meth:`to_dict` (a served answer printed as text); extra keys,
        such as the provenance the command line adds, are ignored."""
        classes = [
            ClassScore(
                c["class"],
                c["score"],
                c["probability"],
                c["rank"],
                [DescriptorScore(**x) for x in c["descriptors"]],
                c["baseline_score"],
                c["baseline_probability"],
                c.get("uncalibrated_probability"),
                c.get("name_share"),
                c.get("description_share"),
                c.get("descriptors_not_listed", 0),
            )
            for c in d["classes"]
        ]
        baseline = [BaselineScore(b["class"], b["score"], b["probability"]) for b in d["baseline"]]
        c = d["contrast"]
        pd = c.get("pair_descriptors") if c else None
        pair = (
            PairDescriptors(
                pd["a"],
                pd["b"],
                [PairFeatureScore(**f) for f in pd["features"]],
                pd["mean_a"],
                pd["mean_b"],
                pd["favours"],
                pd.get("provenance", {}),
            )
            if pd
            else None
        )
        contrast = (
            Contrast(c["a"], c["b"], c["score_a"], c["score_b"], [ContrastRow(**r) for r in c["rows"]], pair)
            if c
            else None
        )
        retrieved = [
            Retrieved(r["class"], r["descriptor"], r["prompt"], r["similarity"], r["descriptor_id"])
            for r in d["retrieved"]
        ]
        return cls(
            d["image"],
            d["library"],
            d["version"],
            d["encoder"],
            d["aggregate"],
            d["logit_scale"],
            d["n_classes"],
            classes,
            baseline,
            contrast,
            retrieved,
            d.get("calibration"),
            d.get("name_description"),
            d.get("retrieval"),
            ImageMaps.from_dict(d["maps"]) if d.get("maps") else None,
        )

    @property
    def split_note(self) -> str | None:
        """Why the name/description split is not shown for this image, if it is not."""
        nd = self.name_description
        return str(nd["note"]) if nd and nd.get("note") else None

    def to_text(self, max_descriptors: int | None = None, max_rows: int | None = None, split_note: bool = True) -> str:
        """A plain-text rendering, as ``whyclip explain`` prints it. ``p`` is the softmax
        probability (calibrated with ``--calibrated``), ``S`` a similarity or score times
        the logit scale; under each class, how much of its score the class name alone gives
        and how much the descriptor content adds, for this image. ``split_note=False`` leaves
        out the line saying why that split is not shown (a command says it once instead)."""
        s = self.logit_scale
        lines = [
            f"{self.image}  (library {self.library} v{self.version}, {self.aggregate} of descriptor "
            f"similarities, logit scale {s:.2f}, {self.n_classes} classes)"
        ]
        if self.calibration:
            cal = self.calibration
            bias = " and per-class biases" if cal.get("per_class_bias") else ""
            lines.append(
                f"  probabilities calibrated: temperature {cal['temperature']:.3g}{bias}, fitted on run "
                f"{cal['run']!r} (held-out ECE {cal['ece_before']:.3f} -> {cal['ece_after']:.3f})"
            )
        note = self.split_note
        if note and split_note:
            lines.append(f"  {note}")
        if self.baseline:
            top = self.baseline[0]
            lines.append(f"  baseline (class-name prompt only) predicts: {top.name}  p {top.probability:.2f}")
        width = max(len(c.name) for c in self.classes)
        for c in self.classes:
            raw = "" if c.uncalibrated_probability is None else f" (uncalibrated {c.uncalibrated_probability:.2f})"
            lines.append(
                f"  {c.rank:>2}. {c.name:<{width}}  p {c.probability:.2f}{raw}   S {c.score * s:6.2f}"
                f"   baseline p {c.baseline_probability:.2f}"
            )
            if c.name_share is not None and c.description_share is not None:
                lines.append(
                    f"        name vs description: the class name alone gives {100 * c.name_share:.0f}% of this score, "
                    f"the descriptor content {100 * c.description_share:.0f}%"
                )
            shown = c.descriptors if max_descriptors is None else c.descriptors[:max_descriptors]
            labels = [
                f'"{d.prompt}" (no descriptors: baseline prompt)' if d.fallback else f'"{d.descriptor}"' for d in shown
            ]
            lw = max((len(x) for x in labels), default=0)
            for d, label in zip(shown, labels, strict=True):
                lines.append(f"        S({label}){' ' * (lw - len(label))} = {d.scaled:6.2f}")
            if len(shown) < len(c.descriptors) + c.descriptors_not_listed:
                lines.append(f"        ... {len(c.descriptors) + c.descriptors_not_listed - len(shown)} more")
        if self.contrast:
            lines.extend(_contrast_lines(self.contrast, s, max_rows, self.aggregate))
        if self.retrieved:
            lines.append(f"  best-matching descriptors in the whole library{retrieval_note(self.retrieval)}:")
            for r in self.retrieved:
                lines.append(f"    S {r.similarity * s:6.2f}  {r.class_name}: {r.descriptor}")
        return "\n".join(lines)


def retrieval_note(r: dict[str, Any] | None) -> str:
    """`` (approximate: recall@10 0.97 on 240 eval images)`` when the hits are not exact."""
    if not r or r.get("exact", True):
        return ""
    on = f" on {r['calibrated_on']}" if r.get("calibrated_on") else ""
    return f" (approximate, {r['index']}: recall@10 {r['recall_at_10']:.2f}{on})"


def midpoint_rule(a: str, b: str, aggregate: str = "mean") -> str:
    """The sentence that makes a contrast table read right: contributions are measured from
    the midpoint of the two classes' scores, so a class's own descriptor that scores below
    it pulls toward the other class (exact for each aggregate's weights)."""
    rule = (
        f"contributions are measured from the midpoint of S({a}) and S({b}): a descriptor that scores above it "
        "pulls toward its own class, one below it toward the other"
    )
    if aggregate == "max":
        return rule + "; under max only each class's best descriptor counts (the others add 0)"
    if aggregate == "centroid":
        return rule + " (under centroid, above the midpoint divided by its class's total descriptor weight)"
    return rule


def _contrast_lines(c: Contrast, s: float, max_rows: int | None, aggregate: str) -> list[str]:
    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x * s:.2f}"

    rows = c.rows
    if max_rows is not None and len(rows) > max_rows:  # the strongest on each side
        k = max_rows // 2
        rows = rows[:k] + rows[len(rows) - (max_rows - k) :]
    mid = (c.score_a + c.score_b) / 2 * s
    lines = [
        f"  {c.a} vs {c.b}, descriptor by descriptor: each descriptor's class, its S under each class, and "
        f"what it adds to S({c.a}) - S({c.b}) = {(c.score_a - c.score_b) * s:+.2f}",
        f"  ({midpoint_rule(c.a, c.b, aggregate)}; midpoint {mid:.2f})",
    ]
    owners = [r.owner(c.a, c.b) for r in rows]
    dw = max([len(r.descriptor) for r in rows] + [10])
    ow = max([len(o) for o in owners] + [5])
    aw, bw = max(len(c.a) + 3, 6), max(len(c.b) + 3, 6)
    pw = max(len(c.a), len(c.b), 12)
    lines.append(
        f"    {'descriptor':<{dw}}  {'class':<{ow}}  {'S ' + c.a:>{aw}}  {'S ' + c.b:>{bw}}  contribution  pulls toward"
    )
    for r, o in zip(rows, owners, strict=True):
        lines.append(
            f"    {r.descriptor:<{dw}}  {o:<{ow}}  {fmt(r.a):>{aw}}  {fmt(r.b):>{bw}}  {r.contribution * s:+12.2f}  "
            f"{r.favours:<{pw}}".rstrip()
        )
    if len(rows) < len(c.rows):
        lines.append(f"    ... {len(c.rows) - len(rows)} more rows with smaller contributions")
    if c.pair_descriptors is not None:
        lines.extend(_pair_lines(c.pair_descriptors, s))
    return lines


def _pair_lines(p: PairDescriptors, s: float) -> list[str]:
    """The pair's contrastive descriptors: each feature as a's look | b's look, S of each."""
    lines = [
        f"  {p.a} vs {p.b}, by their pair descriptors (FuDD; S of each side's description; mean "
        f"{p.mean_a * s:.2f} vs {p.mean_b * s:.2f}: favours {p.favours})"
    ]
    aw = max([len(f.a) for f in p.features] + [len(p.a)])
    lines.append(f"    {p.a:<{aw}}  {'S':>6}  |  {p.b} (S)")
    for f in p.features:
        lines.append(
            f"    {f.a:<{aw}}  {f.similarity_a * s:6.2f}  |  {f.b} ({f.similarity_b * s:.2f})  favours {f.favours}"
        )
    return lines
