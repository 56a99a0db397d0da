"""Images as people give them: every decoded file's RGB pixels against an independent numpy
computation (orientation, transparency on white, 16-bit, float, CMYK, palette, animation)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from whyclip.ingest.images import read_image, read_image_bytes

rng = np.random.default_rng(7)


def encoded(im: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def pixels(data: bytes) -> np.ndarray:
    im = read_image_bytes("test", data)
    assert im.mode == "RGB"
    return np.asarray(im)


def on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255
    return np.rint(rgb * a + 255 * (1 - a)).astype(np.uint8)


def orientation(tag: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = tag
    return exif.tobytes()


@pytest.mark.parametrize(("tag", "turn"), [(6, -1), (8, 1), (3, 2)])
def test_exif_orientation_turns_the_pixels_upright(tag, turn):
    stored = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    got = pixels(encoded(Image.fromarray(stored), exif=orientation(tag)))
    np.testing.assert_array_equal(got, np.rot90(stored, k=turn))


def test_an_exif_rotated_jpeg_reads_as_its_decoded_pixels_turned():
    data = encoded(Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)), "JPEG", exif=orientation(6))
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # as stored, not turned
    assert decoded.shape == (16, 24, 3)
    np.testing.assert_array_equal(pixels(data), np.rot90(decoded, k=-1))


def test_transparency_is_composited_onto_white():
    rgba = rng.integers(0, 256, (5, 8, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    got = pixels(encoded(Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(got, on_white(rgba[..., :3].astype(np.float64), rgba[..., 3]))
    assert tuple(got[0, 0]) == (255, 255, 255)
    assert tuple(got[0, 1]) == tuple(rgba[0, 1, :3])
    la = rng.integers(0, 256, (4, 4, 2), dtype=np.uint8)
    gray = np.repeat(la[..., :1].astype(np.float64), 3, axis=2)
    np.testing.assert_array_equal(pixels(encoded(Image.fromarray(la, "LA"))), on_white(gray, la[..., 1]))


def test_a_palette_with_a_transparent_entry():
    indices = rng.integers(0, 4, (6, 6), dtype=np.uint8)
    palette = [200, 10, 10, 10, 200, 10, 10, 10, 200, 0, 0, 0]
    im = Image.fromarray(indices, "P")
    im.putpalette(palette)
    got = pixels(encoded(im, transparency=3))  # index 3 (black) is transparent
    colours = np.array(palette, dtype=np.uint8).reshape(-1, 3).copy()
    colours[3] = 255
    np.testing.assert_array_equal(got, colours[indices])


def test_16_bit_grayscale_is_scaled_not_clipped():
    values = rng.integers(0, 65536, (5, 7), dtype=np.uint16)
    values[0, :3] = (0, 65535, 32896)
    got = pixels(encoded(Image.fromarray(values)))
    expected = np.floor(values.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(got, np.repeat(expected[..., None], 3, axis=2))
    assert tuple(got[0, :3, 0]) == (0, 255, 128)


def test_float_samples_in_0_1_are_scaled():
    values = rng.random((4, 5)).astype(np.float32)
    got = pixels(encoded(Image.fromarray(values, "F"), "TIFF"))
    np.testing.assert_array_equal(got[..., 1], np.floor(values.astype(np.float64) * 255 + 0.5).astype(np.uint8))


def test_cmyk_by_the_complement_product():
    cmyk = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    got = pixels(encoded(Image.fromarray(cmyk, "CMYK"), "TIFF"))
    c = cmyk.astype(np.float64)
    np.testing.assert_array_equal(got, np.rint((255 - c[..., :3]) * (255 - c[..., 3:]) / 255).astype(np.uint8))


def test_an_animated_gif_gives_its_first_frame(tmp_path):
    first = np.zeros((6, 6, 3), np.uint8)
    first[:3] = (255, 0, 0)
    second = np.full((6, 6, 3), (0, 0, 255), np.uint8)
    path = tmp_path / "anim.gif"
    Image.fromarray(first).save(path, save_all=True, append_images=[Image.fromarray(second)], duration=100)
    assert Image.open(path).n_frames == 2
    np.testing.assert_array_equal(np.asarray(read_image(path)), first)


def test_grayscale_and_rgb_unchanged():
    gray = rng.integers(0, 256, (3, 4), dtype=np.uint8)
    np.testing.assert_array_equal(pixels(encoded(Image.fromarray(gray, "L"))), np.repeat(gray[..., None], 3, axis=2))
    rgb = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(pixels(encoded(Image.fromarray(rgb))), rgb)
