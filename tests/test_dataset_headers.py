"""A dataset CSV's header row: the common ones are recognised in either column order, a
headerless file still reads, and a first row that looks like a header but is not one is
refused in one line saying what was found and what is expected; a library CSV's header
error says what it found too (issue 21, item 2).

The planted eval world's images (fake encoder); the oracle is the list of (file, label)
rows written.
"""

from __future__ import annotations

import csv
import json

import pytest

from tests.helpers.cli import invoke
from tests.helpers.fakes import install_fake
from tests.helpers.planted import CONCEPTS, IMAGES, LIBRARY, write_dataset
from whyclip.ingest.datasets import read_dataset
from whyclip.ingest.readers import read_library
from whyclip.store import InputError

ROWS = [(f"data/{folder}/{f}", folder) for folder, files in IMAGES.items() for f, _ in files]


def _csv(tmp_path, header, rows=ROWS, swap=False):
    write_dataset(tmp_path / "data")
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        if header is not None:
            out.writerow(header)
        out.writerows([(label, file) if swap else (file, label) for file, label in rows])
    return path


def _expected(tmp_path):
    return [((tmp_path / file).resolve(), label) for file, label in ROWS]


@pytest.mark.parametrize(
    "header",
    [
        ("path", "label"),
        ("file", "class"),
        ("image", "label"),
        ("filename", "class_name"),
        ("image_path", "label"),
        ("Image Path", "Class"),
        ("FILE_NAME", "category"),
        (" img ", " species "),
    ],
)
def test_a_common_header_is_skipped(tmp_path, header):
    assert read_dataset(_csv(tmp_path, header)).items == _expected(tmp_path)


@pytest.mark.parametrize("header", [("class", "file"), ("label", "path"), ("Class Name", "Image")])
def test_a_header_names_the_column_order(tmp_path, header):
    assert read_dataset(_csv(tmp_path, header, swap=True)).items == _expected(tmp_path)


def test_a_headerless_file_still_reads(tmp_path):
    assert read_dataset(_csv(tmp_path, None)).items == _expected(tmp_path)


def test_a_first_row_of_data_whose_image_is_missing_is_still_data(tmp_path):
    rows = [("data/missing.png", "banana"), *ROWS]
    items = read_dataset(_csv(tmp_path, None, rows=rows)).items
    assert items == [((tmp_path / "data/missing.png").resolve(), "banana"), *_expected(tmp_path)]


def test_an_unrecognised_header_says_what_it_found_and_what_is_expected(tmp_path):
    path = _csv(tmp_path, ("img_id", "species_name"))
    with pytest.raises(InputError) as err:
        read_dataset(path)
    assert str(err.value) == (
        f"{path}, line 1: found a header 'img_id,species_name' that is not a path and a label column; expected "
        "path,label (or another common pair such as file,class, image,label, filename,class_name, image_path,label, "
        "in either order), or no header row"
    )


def test_eval_reads_a_file_class_header(tmp_path, monkeypatch):
    """The issue's case: eval blamed a label 'class' that does not exist."""
    install_fake(monkeypatch, CONCEPTS)
    home = tmp_path / "home"
    (tmp_path / "lib.json").write_text(json.dumps(LIBRARY))
    assert invoke("ingest", tmp_path / "lib.json", "-l", "shapes", home=home).returncode == 0
    done = invoke("eval", _csv(tmp_path, ("file", "class")), "-l", "shapes", "--json", home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run"]["n_images"] == len(ROWS)


def test_a_header_of_three_columns_says_so(tmp_path):
    write_dataset(tmp_path / "data")
    path = tmp_path / "labels.csv"
    path.write_text("path,label,split\n" + "".join(f"{file},{label},test\n" for file, label in ROWS))
    with pytest.raises(InputError, match=r"found a header 'path,label,split' that is not a path and a label column"):
        read_dataset(path)


@pytest.mark.parametrize(
    ("content", "found"),
    [
        ("name,text\na,b\n", "found 'name,text'"),
        ("descriptor,class\nb,a\n", "found 'descriptor,class'"),
        ("", "found an empty file"),
        ("\nclass,descriptor\n", "found an empty line"),
    ],
)
def test_a_library_csv_header_error_says_what_it_found(tmp_path, content, found):
    path = tmp_path / "lib.csv"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        read_library(path)
    assert str(err.value) == (
        f"{path}: line 1: the header must be 'class,descriptor' (one class and one descriptor a row), {found}"
    )
