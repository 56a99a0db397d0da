"""Turn an LLM's answer into descriptor lines.

A list answer: lines bulleted "- ", "* ", "• " or "+ ", or numbered "1." / "1)" / "(1)", lose
their marker, surrounding quotes or bold, and a trailing full stop. Once a bulleted line is
seen, unbulleted lines are prose (a preamble such as "Sure! Here are some features:" or a
closing remark) and are dropped, except a first line that continues a prompt ending in an
open "-". An answer with no bullet at all is read one item a line, lines ending in ":" dropped.
A structured answer is JSON: ``{"descriptors": [...]}`` or a bare list of strings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

BULLET = re.compile(r"^\s*(?:[-*•+]\s+|\(?\d{1,3}[.)]\s+)(.*)$")
WRAPPERS = ("**", "__", '"', "'", "`")


@dataclass
class ParsedAnswer:
    """The descriptor lines of an answer and the lines dropped as prose."""

    items: list[str] = field(default_factory=list)
    prose: list[str] = field(default_factory=list)


def tidy(line: str) -> str:
    """One item without wrappers, extra spaces or a single trailing full stop."""
    text = " ".join(line.split())
    changed = True
    while changed and text:
        changed = False
        for w in WRAPPERS:
            if len(text) > 2 * len(w) and text.startswith(w) and text.endswith(w):
                text, changed = text[len(w) : -len(w)].strip(), True
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    return text


def parse_list(answer: str, continues_bullet: bool = True) -> ParsedAnswer:
    """Descriptor lines of a free-text list answer (see the module docstring)."""
    lines = [line for line in answer.splitlines() if line.strip()]
    out = ParsedAnswer()
    bulleted = [BULLET.match(line) for line in lines]
    if not any(bulleted):
        for line in lines:
            if line.rstrip().endswith(":"):
                out.prose.append(line.strip())
            elif item := tidy(line):
                out.items.append(item)
        return out
    for i, (line, m) in enumerate(zip(lines, bulleted, strict=True)):
        if m:
            item = tidy(m.group(1))
            if item:
                out.items.append(item)
        elif i == 0 and continues_bullet and not line.rstrip().endswith(":"):
            out.items.append(tidy(line))
        else:
            out.prose.append(line.strip())
    return out


def parse_structured(answer: str) -> ParsedAnswer | None:
    """Descriptor lines of a JSON answer, or None when the answer is not such JSON."""
    try:
        data = json.loads(answer)
    except (json.JSONDecodeError, TypeError):
        return None
    if isinstance(data, dict):
        data = data.get("descriptors")
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        return None
    return ParsedAnswer(items=[t for t in (tidy(x) for x in data) if t])


def parse_answer(answer: str, structured: bool, continues_bullet: bool = True) -> ParsedAnswer:
    """A structured answer as JSON when it is JSON, else (and always for list answers) as a list."""
    if structured:
        parsed = parse_structured(answer)
        if parsed is not None:
            return parsed
    return parse_list(answer, continues_bullet)
