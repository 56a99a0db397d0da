"""Clean a descriptor library and report every line dropped or flagged, and why.

Lines are compared normalised: case-folded, spaces collapsed, a trailing full stop removed.

| step | default | a line is caught when |
|---|---|---|
| ``copied`` | dropped | it equals one of the prompt's example lines (word for word) |
| ``duplicate`` | dropped | it equals an earlier line of the same class |
| ``class-name`` | flagged | it contains the class name as whole words (label leakage) |
| ``long`` | flagged | it has more than ``max_words`` words |
| ``not-visual`` | flagged | it matches :data:`NOT_VISUAL`, a word list per topic a photo cannot show |
| ``shared`` | flagged | ``shared_min`` or more classes of the library have it |

Classes with no descriptors (the model answered nothing, or every line was dropped) are
listed as empty. Lines the parser read as prose around a list are listed as ``prose``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field

from whyclip.store import InputError

DROPPED, FLAGGED = "dropped", "flagged"
DEFAULT_ACTIONS = {
    "copied": DROPPED,
    "duplicate": DROPPED,
    "class-name": FLAGGED,
    "long": FLAGGED,
    "not-visual": FLAGGED,
    "shared": FLAGGED,
}
STEPS = tuple(DEFAULT_ACTIONS)
# The "not visual" rule: a line is flagged when it contains one of these (whole words, any case).
NOT_VISUAL = {
    "conservation status": [
        "endangered",
        "threatened",
        "extinct",
        "extinction",
        "conservation",
        "iucn",
        "protected species",
        "least concern",
    ],
    "population": ["population", "populations", "remaining in the wild"],
    "geography": [
        "native to",
        "endemic to",
        "indigenous to",
        "originated in",
        "originates from",
        "found only in",
        "found throughout",
        "distributed across",
        "distributed throughout",
    ],
    "behaviour over time": [
        "migrates",
        "migrate",
        "migratory",
        "migration",
        "hibernates",
        "hibernation",
        "lifespan",
        "life span",
        "lives up to",
        "years old",
        "breeding season",
        "mating season",
        "nocturnal",
        "lays eggs",
    ],
    "price": ["price", "priced", "cost", "costs", "expensive", "cheap", "inexpensive", "affordable", "dollars"],
    "other senses": [
        "smell",
        "smells",
        "scent",
        "odor",
        "odour",
        "taste",
        "tastes",
        "flavor",
        "flavour",
        "sound",
        "sounds",
        "noise",
        "noisy",
    ],
}
# "sound" as a visible part ("a sound hole", "a sound system") is not a sound.
_EXCEPT = {"sound": r"(?!\s+(?:hole|holes|system|board|box|bar)\b)"}
_NOT_VISUAL_RE = [
    (
        topic,
        re.compile(r"(?<!\w)(" + "|".join(re.escape(w) + r"(?!\w)" + _EXCEPT.get(w, "") for w in words) + ")", re.I),
    )
    for topic, words in NOT_VISUAL.items()
]
_PRICE_SIGN = re.compile(r"[$€£]\s?\d")


@dataclass(frozen=True)
class CleanSettings:
    actions: dict = field(default_factory=lambda: dict(DEFAULT_ACTIONS))
    max_words: int = 15
    shared_min: int = 10

    @classmethod
    def with_overrides(cls, keep=(), drop=(), max_words: int = 15, shared_min: int = 10) -> CleanSettings:
        """``keep``: steps that only flag; ``drop``: steps that drop."""
        for step in (*keep, *drop):
            if step not in DEFAULT_ACTIONS:
                raise InputError(f"unknown cleaning step {step!r}: choose from {', '.join(STEPS)}")
        both = set(keep) & set(drop)
        if both:
            raise InputError(f"step {sorted(both)[0]!r} is given to both --keep and --drop: give it to one")
        actions = dict(DEFAULT_ACTIONS) | dict.fromkeys(keep, FLAGGED) | dict.fromkeys(drop, DROPPED)
        return cls(actions=actions, max_words=max_words, shared_min=shared_min)


@dataclass(frozen=True)
class Finding:
    class_name: str
    descriptor: str
    step: str
    action: str
    reason: str


@dataclass
class CleaningReport:
    """What cleaning did: every finding, the classes left empty, and counts."""

    settings: dict
    n_classes: int = 0
    n_lines_in: int = 0
    n_lines_out: int = 0
    findings: list[Finding] = field(default_factory=list)
    empty_classes: list[dict] = field(default_factory=list)  # {"class", "reason"}

    def count(self, step: str) -> int:
        return sum(f.step == step for f in self.findings)

    def to_json(self) -> dict:
        d = asdict(self)
        d["counts"] = {s: self.count(s) for s in (*STEPS, "prose")}
        return d

    def to_text(self) -> str:
        actions = self.settings["actions"]
        out = [
            f"cleaning: {self.n_classes} classes, {self.n_lines_in} descriptor lines in, {self.n_lines_out} kept, "
            f"{len(self.empty_classes)} empty classes"
        ]
        for step in (*STEPS, "prose"):
            out.append(f"  {step:<11} {actions.get(step, DROPPED):<8} {self.count(step):>6}")
        for f in self.findings:
            out.append(f"{f.action} ({f.step}): {f.class_name!r}: {f.descriptor!r}: {f.reason}")
        for e in self.empty_classes:
            out.append(f"empty: {e['class']!r}: {e['reason']}")
        return "\n".join(out)


def normalise(text: str) -> str:
    return " ".join(text.casefold().split()).rstrip(".").rstrip()


def not_visual_reason(text: str) -> str | None:
    """The rule a line breaks ("'endangered' (conservation status)"), or None."""
    for topic, pattern in _NOT_VISUAL_RE:
        m = pattern.search(text)
        if m:
            return f"{m.group(1).lower()!r} ({topic})"
    if _PRICE_SIGN.search(text):
        return "a currency sign (price)"
    return None


def _class_name_pattern(name: str) -> re.Pattern:
    words = name.replace("_", " ").split()
    return re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)", re.I)


def clean_classes(
    classes: list[tuple[str, list[str]]],
    examples: list[str],
    settings: CleanSettings | None = None,
    prose: dict[str, list[str]] | None = None,
    empty_reasons: dict[str, str] | None = None,
) -> tuple[list[tuple[str, list[str]]], CleaningReport]:
    """The cleaned classes (label order kept) and the report. ``prose``: lines the parser
    dropped, by class; ``empty_reasons``: why a class came in empty (default: in the input)."""
    settings = settings or CleanSettings()
    actions = settings.actions
    report = CleaningReport(settings=asdict(settings), n_classes=len(classes))
    example_set = {normalise(e) for e in examples}
    in_classes = Counter(n for _, descs in classes for n in {normalise(d) for d in descs})
    out: list[tuple[str, list[str]]] = []
    for name, descs in classes:
        for line in (prose or {}).get(name, []):
            report.findings.append(Finding(name, line, "prose", DROPPED, "prose around the list, not a list item"))
        pattern, seen, kept = _class_name_pattern(name), set(), []
        for text in descs:
            report.n_lines_in += 1
            key = normalise(text)
            caught: list[tuple[str, str]] = []
            if key in seen:
                caught.append(("duplicate", "an earlier line of the class says the same"))
            if key in example_set:
                caught.append(("copied", "copied word for word from the prompt's examples"))
            if pattern.search(text):
                caught.append(("class-name", "names its own class (label leakage)"))
            if len(text.split()) > settings.max_words:
                caught.append(("long", f"{len(text.split())} words, over {settings.max_words}"))
            if reason := not_visual_reason(text):
                caught.append(("not-visual", f"not visual: {reason}"))
            if in_classes[key] >= settings.shared_min:
                caught.append(("shared", f"in {in_classes[key]} classes (at least {settings.shared_min})"))
            seen.add(key)
            for step, reason in caught:
                report.findings.append(Finding(name, text, step, actions[step], reason))
            if not any(actions[step] == DROPPED for step, _ in caught):
                kept.append(text)
        if not kept:
            why = (empty_reasons or {}).get(name) or (
                "no descriptors in the input" if not descs else "every line dropped by cleaning"
            )
            report.empty_classes.append({"class": name, "reason": why})
        report.n_lines_out += len(kept)
        out.append((name, kept))
    return out, report
