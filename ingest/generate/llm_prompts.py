"""Generation prompts: the default (the seed's question after two worked examples written
for this project), a zero-shot variant, or a user's text file with a ``{class}`` placeholder.

The examples of a prompt are its lines that start with "- " and hold no ``{class}``: the
cleaning step drops answers that copy them word for word.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from whyclip.store import InputError

PLACEHOLDER = "{class}"
QUESTION = (
    "Q: What are useful features for distinguishing a {class} in a photo?\n"
    "A: There are several useful visual features to tell there is a {class} in a photo:\n"
    "-"
)
# Two worked examples written for this project: one animal, one object, each a "- " list of
# short, visible features (no behaviour, range or price), so the answer imitates that form.
EXAMPLES = """\
Q: What are useful visual features for distinguishing a hummingbird in a photo?
A: There are several useful visual features to tell there is a hummingbird in a photo:
- a very small bird
- a long, needle-thin bill
- glittering green or ruby throat feathers
- wings blurred into a haze while hovering
- often beside a tubular flower or a feeder

Q: What are useful visual features for distinguishing an umbrella in a photo?
A: There are several useful visual features to tell there is an umbrella in a photo:
- a dome-shaped canopy of waterproof fabric
- thin ribs radiating from a central shaft
- a curved or straight handle at the bottom
- a pointed tip at the top of the canopy
- usually held above a person's head

"""
BUILTIN = {"default": EXAMPLES + QUESTION, "zero-shot": QUESTION}


@dataclass(frozen=True)
class Prompt:
    """A prompt template: its name (a built-in name or the file it came from) and text."""

    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def render(self, class_name: str) -> str:
        """The question for one class ("_" read as a space, as the paper's code does)."""
        return self.text.replace(PLACEHOLDER, class_name.replace("_", " "))

    @property
    def examples(self) -> list[str]:
        return example_lines(self.text)

    @property
    def opens_a_bullet(self) -> bool:
        """The text ends in an open "-", so an answer's first line continues that bullet."""
        return self.text.rstrip().endswith("\n-") or self.text.rstrip() == "-"


def example_lines(text: str) -> list[str]:
    """The few-shot examples: every "- " line without the placeholder, marker removed."""
    return [line[2:].strip() for line in text.splitlines() if line.startswith("- ") and PLACEHOLDER not in line]


def load_prompt(value: str | None) -> Prompt:
    """A built-in prompt by name (``default``, ``zero-shot``) or a UTF-8 text file with ``{class}``."""
    if value is None or value in BUILTIN:
        name = value or "default"
        return Prompt(name, BUILTIN[name])
    path = Path(value)
    if not path.is_file():
        raise InputError(f"--prompt {value!r}: not a built-in prompt ({', '.join(BUILTIN)}) and no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: the prompt is not valid UTF-8: save it as UTF-8") from None
    if PLACEHOLDER not in text:
        raise InputError(
            f"{path}: the prompt has no {PLACEHOLDER} placeholder: write {PLACEHOLDER} where the class name goes"
        )
    return Prompt(str(path), text)
