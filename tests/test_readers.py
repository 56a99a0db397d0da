"""Library files: the paper's JSON, JSONL and CSV; every error names file, place, problem."""

from __future__ import annotations

import json

import pytest

from whyclip.ingest.readers import read_library
from whyclip.store.errors import InputError


def write(tmp_path, name, content, mode="w"):
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


def test_json_keeps_key_order_and_empty_classes(tmp_path):
    p = write(tmp_path, "lib.json", json.dumps({"zebra": ["stripes"], "ant": [], "cat": ["whiskers", "fur"]}))
    parsed = read_library(p)
    assert parsed.classes == [("zebra", ["stripes"]), ("ant", []), ("cat", ["whiskers", "fur"])]
    assert parsed.warnings == []


def test_jsonl_and_csv_group_by_first_appearance(tmp_path):
    lines = [
        {"class": "b", "descriptor": "x"},
        {"class": "a", "descriptor": "y"},
        {"class": "b", "descriptor": "z"},
        {"class": "c"},
    ]
    p = write(tmp_path, "lib.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert read_library(p).classes == [("b", ["x", "z"]), ("a", ["y"]), ("c", [])]
    c = write(tmp_path, "lib.csv", 'class,descriptor\nb,x\na,"y, with comma"\nb,z\nc,\n')
    assert read_library(c).classes == [("b", ["x", "z"]), ("a", ["y, with comma"]), ("c", [])]


def test_duplicate_and_empty_descriptors_are_dropped_with_a_warning(tmp_path):
    p = write(tmp_path, "lib.json", json.dumps({"bazaar": ["stalls", "stalls", " ", "crowds"]}))
    parsed = read_library(p)
    assert parsed.classes == [("bazaar", ["stalls", "crowds"])]
    assert len(parsed.warnings) == 2
    assert "duplicate descriptor 'stalls'" in parsed.warnings[0]


BAD = [
    ("lib.json", '["not", "an", "object"]', "top level must be an object"),
    ("lib.json", '{"frog": "green"}', "class 'frog': descriptors must be a list"),
    ("lib.json", '{"frog": ["green", 3]}', "class 'frog', descriptor 1: not a string"),
    ("lib.json", '{"frog": ["a"], "frog": ["b"]}', "duplicate class 'frog'"),
    ("lib.json", '{"": ["a"]}', "empty class name"),
    ("lib.json", '{"frog": ["green", "protru', "not valid JSON"),
    ("lib.json", b'{"frog": ["gr\xe9en"]}', "not valid UTF-8 (byte 0xe9 at offset 13)"),
    ("lib.json", "{}", "the library has no classes"),
    ("lib.jsonl", '{"class": "a", "descriptor": "x"}\n{"descriptor": "y"}\n', "line 2: expected an object"),
    ("lib.jsonl", '{"class": "a", "descriptor": 5}\n', "line 1: descriptor must be a string"),
    ("lib.jsonl", '{"class": "a"\n', "line 1: not valid JSON"),
    ("lib.csv", "name,text\na,b\n", "line 1: the header must be 'class,descriptor'"),
    ("lib.csv", "class,descriptor\n ,b\n", "line 2: empty class name"),
    ("lib.txt", "a b", "unknown library format '.txt'"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD)
def test_bad_files_name_file_place_and_problem(tmp_path, name, content, message):
    p = write(tmp_path, name, content)
    with pytest.raises(InputError) as err:
        read_library(p)
    text = str(err.value)
    assert message in text
    assert str(p) in text
    assert "\n" not in text


def test_truncated_json_says_so(tmp_path):
    p = write(tmp_path, "lib.json", '{"frog": ["green", "protruding eyes"], "toad": ["warts"')
    with pytest.raises(InputError, match="truncated"):
        read_library(p)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_library(tmp_path / "absent.json")


SEVEN = ["cub", "dtd", "eurosat", "food101", "imagenet", "pets", "places365"]


def test_the_papers_seven_files_read_with_their_published_counts():
    from tests.helpers import shared_file

    classes = descriptors = 0
    warnings = []
    for name in SEVEN:
        parsed = read_library(shared_file(f"descriptors_{name}.json"))
        classes += len(parsed.classes)
        descriptors += sum(len(d) for _, d in parsed.classes)
        warnings += parsed.warnings
    # SOURCE.md: 1,760 classes and 10,183 descriptors, 3 of them repeats within "bazaar-indoor"
    assert classes == 1760
    assert descriptors == 10183 - 3
    assert len(warnings) == 3
    assert all("bazaar-indoor" in w for w in warnings)
    imagenet = dict(read_library(shared_file("descriptors_imagenet.json")).classes)
    assert list(imagenet)[:2] == ["tench", "goldfish"]
