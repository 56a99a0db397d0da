"""The paper's prompt rule, pinned to exact strings (its code's quirks included)."""

from __future__ import annotations

import pytest

from whyclip.store.errors import InputError
from whyclip.store.method.templates import Template, baseline_prompt, check_baseline

# (class, descriptor, the prompt the paper's code builds), written out by hand.
PAPER_CASES = [
    ("tree frog", "a long tail", "tree frog, which is a long tail"),
    ("tree frog", "an orange beak", "tree frog, which is an orange beak"),
    ("tree frog", "antennae", "tree frog, which is antennae"),  # quirk: any word starting with "a"
    ("tree frog", "has webbed feet", "tree frog, which has webbed feet"),
    ("tree frog", "hashed markings", "tree frog, which hashed markings"),  # quirk: prefix "has"
    ("tree frog", "often found in trees", "tree frog, which often found in trees"),
    ("tree frog", "typically bright green", "tree frog, which typically bright green"),
    ("tree frog", "may have orange feet", "tree frog, which may have orange feet"),
    ("tree frog", "can climb glass", "tree frog, which can climb glass"),
    ("candle", "canopy of wax", "candle, which canopy of wax"),  # quirk: prefix "can"
    ("knife", "used for cutting", "knife, which is used for cutting"),
    ("tree frog", "protruding eyes", "tree frog, which has protruding eyes"),
    ("tree frog", "Antlers", "tree frog, which has Antlers"),  # quirk: case-sensitive
    ("airplane_cabin", "rows of seats", "airplane cabin, which has rows of seats"),  # underscores -> spaces
    ("bazaar-indoor", "stalls", "bazaar-indoor, which has stalls"),  # only underscores change
]


@pytest.mark.parametrize(("cls", "descriptor", "expected"), PAPER_CASES)
def test_paper_template_exact_strings(cls, descriptor, expected):
    assert Template("paper").build(cls, descriptor) == expected


def test_bare_and_user_templates():
    assert Template("bare").build("tree frog", "protruding eyes") == "protruding eyes"
    t = Template("a photo of a {class} with {descriptor}.")
    assert t.build("tree_frog", "protruding eyes") == "a photo of a tree frog with protruding eyes."
    waffle = Template("A photo of a {class}, {which}.")  # WaffleCLIP's DCLIP prompt
    assert waffle.build("tree_frog", "protruding eyes") == "A photo of a tree frog, which has protruding eyes."
    assert waffle.build("ant", "antennae") == "A photo of a ant, which is antennae."
    assert waffle.build("cat", "often curled up") == "A photo of a cat, which often curled up."


@pytest.mark.parametrize("bad", ["{class} only", "{descriptor} of {colour}", "{descriptor", "plain text"])
def test_bad_user_templates_are_refused(bad):
    with pytest.raises(InputError, match="template"):
        Template(bad)


def test_baseline_prompts():
    assert baseline_prompt(check_baseline("a photo of a {class}."), "tree_frog") == "a photo of a tree frog."
    for bad in ["a photo", "a {class} and {descriptor}"]:
        with pytest.raises(InputError, match="baseline"):
            check_baseline(bad)
