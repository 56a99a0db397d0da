"""Class names as users write them: ``explain --compare`` matches like ``eval`` matches labels."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.fakes import FakeEncoder
from whyclip.ingest import ingest_library
from whyclip.ingest.datasets import match_labels
from whyclip.store.errors import InputError
from whyclip.store.names import normalise

CLASSES = {"tree frog": ["green skin"], "Red_Fox": ["red fur"], "red fox": ["bushy tail"], "banana": ["yellow peel"]}


@pytest.fixture
def lib(store):
    ingest_library(store, CLASSES, "names", FakeEncoder(["green", "red", "yellow"]), template="bare")
    return store.load("names")


def test_compare_names_match_loosely_and_exactly_first(lib):
    assert [lib.class_position(n) for n in ("tree frog", "Tree_Frog", "  TREE   frog ", "Red_Fox", "red fox")] == [
        0,
        0,
        0,
        1,
        2,
    ]
    image = np.eye(32, dtype=np.float32)[:1]
    contrast = lib.explain(image, compare=("TREE_FROG", "Banana"))[0].contrast
    assert (contrast.a, contrast.b) == ("tree frog", "banana")


def test_an_ambiguous_or_unknown_name_is_one_clear_error(lib):
    with pytest.raises(InputError, match=r"'RED FOX' is ambiguous .*'Red_Fox', 'red fox'"):
        lib.class_position("RED FOX")
    with pytest.raises(InputError, match=r"has no class 'bananas'.*did you mean 'banana'"):
        lib.class_position("bananas")


def test_eval_labels_use_the_same_rule():
    assert normalise(" Tree__frog ") == "tree frog"
    assert match_labels(["Tree_Frog", "RED FOX", "banana"], list(CLASSES)) == (
        {"Tree_Frog": 0, "banana": 3},
        ["RED FOX"],
    )
