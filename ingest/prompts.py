"""Prompt templates: turn (class, descriptor) into the text CLIP embeds.

``paper`` reproduces Menon & Vondrick's code (``make_descriptor_sentence`` with the class
name prepended and ", " between): the tests pin its exact strings, quirks included.
"""

from __future__ import annotations

import string

from store.errors import InputError

DEFAULT_TEMPLATE = "paper"
DEFAULT_BASELINE = "a photo of a {class}."
NAMED = {"bare": "{descriptor}", "paper": "{class}, which is/has {descriptor} (the paper's rule)"}


def wordify(class_name: str) -> str:
    """Class names as the paper's code writes them into prompts: underscores become spaces."""
    return class_name.replace("_", " ")


def descriptor_sentence(descriptor: str) -> str:
    """The paper's rule, as its code applies it: plain, case-sensitive *character* prefixes.

    So "antennae" reads "which is antennae" (it starts with "a") and "canopy" reads
    "which canopy" (it starts with "can"): the published quirk, kept for fidelity.
    """
    if descriptor.startswith(("a", "an")):
        return f"which is {descriptor}"
    if descriptor.startswith(("has", "often", "typically", "may", "can")):
        return f"which {descriptor}"
    if descriptor.startswith("used"):
        return f"which is {descriptor}"
    return f"which has {descriptor}"


def paper_prompt(class_name: str, descriptor: str) -> str:
    return f"{wordify(class_name)}, {descriptor_sentence(descriptor)}"


def _fields(fmt: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(fmt) if name is not None}
    except ValueError as exc:
        raise InputError(f"template {fmt!r} is not a valid format string ({exc}): use {{class}} and {{descriptor}}") from None


class Template:
    """``bare``, ``paper`` or a format string with ``{descriptor}`` or ``{which}`` (the
    descriptor under the paper's rule, e.g. "which has protruding eyes"), and optionally
    ``{class}``: ``"A photo of a {class}, {which}."`` is WaffleCLIP's form of the paper's prompt."""

    def __init__(self, spec: str = DEFAULT_TEMPLATE):
        self.spec = spec
        if spec not in NAMED:
            fields = _fields(spec)
            unknown = fields - {"class", "descriptor", "which"}
            if unknown or not fields & {"descriptor", "which"}:
                raise InputError(
                    f"template {spec!r} must contain {{descriptor}} or {{which}}, and no other field than {{class}} "
                    f"(found {sorted(fields) or 'none'}), or be one of: {', '.join(NAMED)}"
                )

    def build(self, class_name: str, descriptor: str) -> str:
        if self.spec == "paper":
            return paper_prompt(class_name, descriptor)
        if self.spec == "bare":
            return descriptor
        return self.spec.format_map({"class": wordify(class_name), "descriptor": descriptor,
                                     "which": descriptor_sentence(descriptor)})  # fmt: skip


def check_baseline(fmt: str) -> str:
    fields = _fields(fmt)
    if fields != {"class"}:
        raise InputError(f"baseline prompt {fmt!r} must contain {{class}} and no other field (e.g. {DEFAULT_BASELINE!r})")
    return fmt


def baseline_prompt(fmt: str, class_name: str) -> str:
    return fmt.format_map({"class": wordify(class_name)})
