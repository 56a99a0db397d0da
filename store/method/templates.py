"""Prompt templates: turn (class, descriptor) into the text CLIP embeds.

Validation lives here; the rules themselves (``wordify``, the paper's ``descriptor_sentence``,
every template's rendering) live once, versioned, in :mod:`whyclip.store.method.prompts`, so that the
rule version a library records names exactly the code that built its prompts.
"""

from __future__ import annotations

import string

from whyclip.store.errors import InputError
from whyclip.store.method.prompts import build_baseline, build_prompt, descriptor_sentence, paper_prompt, wordify

DEFAULT_TEMPLATE = "paper"
DEFAULT_BASELINE = "a photo of a {class}."
__all__ = [
    "DEFAULT_BASELINE",
    "DEFAULT_TEMPLATE",
    "NAMED",
    "Template",
    "baseline_prompt",
    "check_baseline",
    "descriptor_sentence",
    "paper_prompt",
    "wordify",
]
NAMED = {"bare": "{descriptor}", "paper": "{class}, which is/has {descriptor} (the paper's rule)"}


def _fields(fmt: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(fmt) if name is not None}
    except ValueError as exc:
        raise InputError(
            f"template {fmt!r} is not a valid format string ({exc}): use {{class}} and {{descriptor}}"
        ) from None


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
        return build_prompt(self.spec, class_name, descriptor)


def check_baseline(fmt: str) -> str:
    fields = _fields(fmt)
    if fields != {"class"}:
        raise InputError(
            f"baseline prompt {fmt!r} must contain {{class}} and no other field (e.g. {DEFAULT_BASELINE!r})"
        )
    return fmt


def baseline_prompt(fmt: str, class_name: str) -> str:
    return build_baseline(fmt, class_name)
