"""Prompt rendering, pure string functions: (class, descriptor) -> the text CLIP embeds.

They live in the store because the store re-derives prompts: a descriptor row keeps its
prompt only where rendering the library's template would not give it back (an empty
``prompt`` means "rendered"), which at a million descriptors saves tens of megabytes.
``ingest.prompts`` builds prompts with these same functions.

``paper`` reproduces Menon & Vondrick's code (``make_descriptor_sentence`` with the class
name prepended and ", " between): the tests pin its exact strings, quirks included.
"""

from __future__ import annotations

import string

from sqlalchemy import case, func, literal
from sqlalchemy.sql.elements import ColumnElement

PAPER_PREFIXES = (
    (("a", "an"), "which is "),
    (("has", "often", "typically", "may", "can"), "which "),
    (("used",), "which is "),
)


def wordify(class_name: str) -> str:
    """Class names as the paper's code writes them into prompts: underscores become spaces."""
    return class_name.replace("_", " ")


def descriptor_sentence(descriptor: str) -> str:
    """The paper's rule, as its code applies it: plain, case-sensitive *character* prefixes.

    So "antennae" reads "which is antennae" (it starts with "a") and "canopy" reads
    "which canopy" (it starts with "can"): the published quirk, kept for fidelity.
    """
    for prefixes, joiner in PAPER_PREFIXES:
        if descriptor.startswith(prefixes):
            return f"{joiner}{descriptor}"
    return f"which has {descriptor}"


def paper_prompt(class_name: str, descriptor: str) -> str:
    return f"{wordify(class_name)}, {descriptor_sentence(descriptor)}"


def _plain_fields(spec: str) -> list[tuple[str, str | None]] | None:
    """(literal, field) pieces of a format string whose fields are bare ``{class}``,
    ``{descriptor}`` or ``{which}``; None when it has anything else (a conversion, a format spec)."""
    try:
        pieces = list(string.Formatter().parse(spec))
    except ValueError:
        return None
    for _, name, fmt, conversion in pieces:
        if name is not None and (name not in ("class", "descriptor", "which") or fmt or conversion):
            return None
    return [(literal_text, name) for literal_text, name, _, _ in pieces]


def render(template: str, class_name: str, descriptor: str) -> str | None:
    """The prompt the template ``bare``, ``paper`` or a plain format string gives; None
    for a template the store does not render (its prompts are then stored)."""
    if template == "paper":
        return paper_prompt(class_name, descriptor)
    if template == "bare":
        return descriptor
    pieces = _plain_fields(template)
    if pieces is None:
        return None
    values = {"class": wordify(class_name), "descriptor": descriptor, "which": descriptor_sentence(descriptor)}
    return "".join(lit + (values[name] if name else "") for lit, name in pieces)


def render_baseline(template: str, class_name: str) -> str | None:
    """The class-name prompt a baseline template with one ``{class}`` field gives."""
    pieces = _plain_fields(template)
    if pieces is None or any(name in ("descriptor", "which") for _, name in pieces):
        return None
    return "".join(lit + (wordify(class_name) if name else "") for lit, name in pieces)


def render_sql(template: str, class_name: ColumnElement, descriptor: ColumnElement) -> ColumnElement | None:
    """:func:`render` as a SQL expression over the class-name and descriptor columns (for
    searching prompts in the database); None where :func:`render` gives None."""
    word = func.replace(class_name, "_", " ")
    whens = [
        (func.substr(descriptor, 1, len(prefix)) == prefix, literal(joiner))
        for prefixes, joiner in PAPER_PREFIXES
        for prefix in prefixes
    ]
    which = case(*whens, else_=literal("which has ")) + descriptor
    if template == "paper":
        return word + literal(", ") + which
    if template == "bare":
        return descriptor
    pieces = _plain_fields(template)
    if pieces is None:
        return None
    out: ColumnElement = literal("")
    for lit, name in pieces:
        out = out + literal(lit) if lit else out
        if name:
            out = out + {"class": word, "descriptor": descriptor, "which": which}[name]
    return out
