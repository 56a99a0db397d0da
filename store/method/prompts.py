"""The prompt rules, versioned: (template, class, descriptor) -> the text CLIP embeds.

This is the one implementation of every template rule. Ingest builds prompts through
:func:`build_prompt` and :func:`build_baseline`; the store keeps each prompt exactly as
embedded, and each library row names the rule that made its prompts (``prompt_rule``,
e.g. ``"paper/1"``, from :func:`rule_name`), so nothing is ever re-rendered on read.

A rule, once released, never changes: a change is a new entry in :data:`RULES` and a
bump of :data:`RULE_VERSION`, and older versions stay here for as long as stores may name
them (migration 0004 fills prompts that older whyclips left empty with ``RULES[1]``).

``paper`` reproduces Menon & Vondrick's code (``make_descriptor_sentence`` with the class
name prepended and ", " between): the tests pin its exact strings, quirks included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

NAMED = ("paper", "bare")  # templates with a name; anything else is a format string


def _wordify_v1(class_name: str) -> str:
    return class_name.replace("_", " ")


_PAPER_PREFIXES_V1 = (
    (("a", "an"), "which is "),
    (("has", "often", "typically", "may", "can"), "which "),
    (("used",), "which is "),
)


def _descriptor_sentence_v1(descriptor: str) -> str:
    for prefixes, joiner in _PAPER_PREFIXES_V1:
        if descriptor.startswith(prefixes):
            return f"{joiner}{descriptor}"
    return f"which has {descriptor}"


def _prompt_v1(template: str, class_name: str, descriptor: str) -> str:
    if template == "paper":
        return f"{_wordify_v1(class_name)}, {_descriptor_sentence_v1(descriptor)}"
    if template == "bare":
        return descriptor
    return template.format_map(
        {"class": _wordify_v1(class_name), "descriptor": descriptor, "which": _descriptor_sentence_v1(descriptor)}
    )


def _baseline_v1(template: str, class_name: str) -> str:
    return template.format_map({"class": _wordify_v1(class_name)})


@dataclass(frozen=True)
class PromptRules:
    """One version of the rules: how class names read in prompts, the paper's descriptor
    sentence, a descriptor prompt from a template, and a baseline prompt."""

    wordify: Callable[[str], str]
    descriptor_sentence: Callable[[str], str]
    prompt: Callable[[str, str, str], str]
    baseline: Callable[[str, str], str]


RULES: dict[int, PromptRules] = {
    # 1: underscores in class names become spaces; the paper's plain, case-sensitive
    # character prefixes (so "antennae" reads "which is antennae", "canopy" "which canopy");
    # format strings filled with str.format_map ({class}, {descriptor}, {which}).
    1: PromptRules(_wordify_v1, _descriptor_sentence_v1, _prompt_v1, _baseline_v1),
}
RULE_VERSION = 1  # the rules new libraries are built with


def rule_name(template: str, version: int = RULE_VERSION) -> str:
    """What a library row records in ``prompt_rule``: ``paper/1``, ``bare/1`` or
    ``format/1`` (a format-string template; its baseline template follows the same version)."""
    return f"{template if template in NAMED else 'format'}/{version}"


def build_prompt(template: str, class_name: str, descriptor: str, version: int = RULE_VERSION) -> str:
    return RULES[version].prompt(template, class_name, descriptor)


def build_baseline(template: str, class_name: str, version: int = RULE_VERSION) -> str:
    return RULES[version].baseline(template, class_name)


def wordify(class_name: str) -> str:
    """Class names as the paper's code writes them into prompts: underscores become spaces."""
    return RULES[RULE_VERSION].wordify(class_name)


def descriptor_sentence(descriptor: str) -> str:
    """The paper's rule, as its code applies it: plain, case-sensitive *character* prefixes.

    So "antennae" reads "which is antennae" (it starts with "a") and "canopy" reads
    "which canopy" (it starts with "can"): the published quirk, kept for fidelity.
    """
    return RULES[RULE_VERSION].descriptor_sentence(descriptor)


def paper_prompt(class_name: str, descriptor: str) -> str:
    return build_prompt("paper", class_name, descriptor)
