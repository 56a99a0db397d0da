"""Read images for the encoder, turning every way a file can be bad into one clear line."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from store.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def read_image(path: str | Path) -> Image.Image:
    """Open and fully decode one image as RGB, or raise :class:`InputError`."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such image file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                im.load()
                return im.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            f"{p}: too many pixels to be a safe image (over {Image.MAX_IMAGE_PIXELS:,}): downscale it first"
        ) from None
    except UnidentifiedImageError:
        raise InputError(f"{p}: not an image (no format Pillow reads): pass a JPEG, PNG or WebP file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{p}: truncated or corrupt image ({exc}): re-export or re-download it") from None


def read_images(paths: Sequence[str | Path]) -> list[Image.Image]:
    """Every image decoded up front, so a bad file stops the run before any work."""
    return [read_image(p) for p in paths]


def expand_image_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to the images directly inside them (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise InputError(f"{p}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out.extend(found)
        else:
            out.append(p)
    return out


def embed_image_files(encoder, paths: Sequence[str | Path]):
    """Unit image vectors (N, dim) for image files (every file checked first)."""
    vectors, _ = encoder.embed_images(read_images(paths))
    return vectors
