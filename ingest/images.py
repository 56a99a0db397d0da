"""Read images for the encoder, turning every way a file can be bad into one clear line."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from whyclip.store.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def read_image(path: str | Path) -> Image.Image:
    """Open and fully decode one image file as RGB, or raise :class:`InputError`."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such image file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not an image")
    return _decode(p, str(p))


def check_image(path: str | Path) -> None:
    """Cheap checks from the file header only (exists, an image, not a decompression bomb);
    truncation shows only when the pixels are decoded."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such image file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not an image")
    _decode(p, str(p), header_only=True)


def read_image_bytes(name: str, data: bytes) -> Image.Image:
    """Decode an uploaded image, with the same checks as :func:`read_image`."""
    if not data:
        raise InputError(f"{name}: empty file, not an image")
    return _decode(io.BytesIO(data), name)


def _decode(source, label: str, header_only: bool = False) -> Image.Image | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                if header_only:
                    return None
                im.load()
                return im.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            f"{label}: too many pixels to be a safe image (over {Image.MAX_IMAGE_PIXELS:,}): downscale it first"
        ) from None
    except UnidentifiedImageError:
        if _has_image_signature(source):
            raise InputError(f"{label}: truncated or corrupt image (it starts like one, but cannot be read): "
                             "re-export or re-download it") from None  # fmt: skip
        raise InputError(f"{label}: not an image (no format Pillow reads): use a JPEG, PNG or WebP file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{label}: truncated or corrupt image ({exc}): re-export or re-download it") from None


SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def _has_image_signature(source) -> bool:
    """Whether the data starts with a common image format's magic bytes (WebP: RIFF....WEBP)."""
    if isinstance(source, io.BytesIO):
        head = source.getvalue()[:12]
    else:
        with open(source, "rb") as f:
            head = f.read(12)
    return head.startswith(SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


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
