"""Checks for the demo descriptor library and the drawn sample images."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

UI = Path(__file__).resolve().parents[1] / "ui"
LIBRARY = UI / "demo" / "library.json"


@pytest.fixture(scope="module")
def library() -> dict:
    with LIBRARY.open(encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def demo_images() -> ModuleType:
    import whyclip.ui.demo.samples

    return whyclip.ui.demo.samples


def test_library_shape(library: dict) -> None:
    assert isinstance(library, dict)
    assert 20 <= len(library) <= 25
    for name, descriptors in library.items():
        assert isinstance(name, str)
        assert name.strip()
        assert isinstance(descriptors, list)
        assert descriptors
        assert all(isinstance(d, str) and d.strip() for d in descriptors)
        assert len(set(descriptors)) == len(descriptors), name


def test_library_frogs_first(library: dict) -> None:
    assert list(library)[:2] == ["tree frog", "tailed frog"]
    assert "bright green colour" in library["tree frog"]
    assert "protruding eyes" in library["tree frog"]


def test_library_shares_a_descriptor(library: dict) -> None:
    seen: dict[str, str] = {}
    shared = set()
    for name, descriptors in library.items():
        for d in descriptors:
            if d in seen and seen[d] != name:
                shared.add(d)
            seen.setdefault(d, name)
    assert shared


@pytest.mark.parametrize("size", [224, 96])
def test_draw_samples(tmp_path: Path, demo_images: ModuleType, size: int) -> None:
    paths = demo_images.draw_samples(tmp_path / "a", size=size)
    assert len(paths) >= 4
    assert [p.name for p in paths] == list(demo_images.SAMPLE_CLASSES)
    for name in ("tree_frog.png", "banana.png", "stop_sign.png"):
        assert name in demo_images.SAMPLE_CLASSES
    for path in paths:
        assert path.is_file()
        assert path.suffix == ".png"
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (size, size)
            assert len(image.getcolors(maxcolors=size * size) or []) > 8  # not blank


def test_draw_samples_deterministic(tmp_path: Path, demo_images: ModuleType) -> None:
    first = demo_images.draw_samples(str(tmp_path / "one"))
    second = demo_images.draw_samples(tmp_path / "two")
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_sample_classes_in_library(library: dict, demo_images: ModuleType) -> None:
    assert demo_images.SAMPLE_CLASSES
    for file_name, cls in demo_images.SAMPLE_CLASSES.items():
        assert cls in library, file_name
        assert file_name == cls.replace(" ", "_") + ".png"
