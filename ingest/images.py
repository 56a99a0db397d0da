"""Read images for the encoder as a viewer shows them, turning every way a file can be bad
into one clear line; and list the images of a folder, by one rule for every surface
(:func:`list_images`).

A decoded image is turned upright by its EXIF orientation, its first frame taken when it is
animated, and converted to 8-bit RGB by :func:`to_rgb`: transparency composited onto white
(not black, which is what a plain conversion does), 16-bit and 32-bit samples scaled to
8 bits (not clipped), CMYK by the usual complement product.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, overload

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from whyclip.store import InputError

log = logging.getLogger(__name__)

# The version of the rules turning a file into pixels, part of the image cache key: vectors
# cached from pixels read otherwise (before EXIF orientation and white backgrounds) are not
# reused for the same file. Bump it whenever a rule here changes the pixels of some file.
PIXEL_RULES = "r2"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
#: files and folders one listing of a folder looks through at most (its memory and time are
#: bounded by it): eval's dataset folders, explain's and generate-pairs' folders, the dashboard's
MAX_LISTED_ENTRIES = 1_000_000


@dataclass(frozen=True)
class ImageListing:
    """The images under a folder (:func:`list_images`): ``files`` sorted by path, and how
    many folders hold them."""

    root: Path
    files: list[Path]
    folders: int

    @property
    def summary(self) -> str:
        """One line: "found 12 images in 3 folders under DIR", or, with none, what was looked for."""
        if not self.files:
            return no_images_message(self.root)
        return f"found {_count(len(self.files), 'image')} in {_count(self.folders, 'folder')} under {self.root}"


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def no_images_message(root: str | Path) -> str:
    return (
        f"no images under {root} (looked recursively for {', '.join(sorted(IMAGE_SUFFIXES))}; "
        "hidden files and folders skipped)"
    )


def list_images(root: str | Path, limit: int = MAX_LISTED_ENTRIES) -> ImageListing:
    """The image files under folder ``root``, the one rule every surface uses (eval's
    dataset folders, explain, generate-pairs' --pairs-from-images, the dashboard's
    --images): recursive; names starting with "." (hidden files and folders) skipped;
    an image is a file with a suffix in :data:`IMAGE_SUFFIXES` (any case); sorted by path;
    symbolic links to folders not followed (no cycles). Looking through more than ``limit``
    files and folders is refused (:class:`InputError`), so no tree can take unbounded memory
    or time. No images is not an error here: :attr:`ImageListing.summary` says so."""
    top = Path(root).expanduser()
    if not top.is_dir():
        raise InputError(f"{top}: no such folder")
    files: list[Path] = []
    folders: set[str] = set()
    seen = 0
    for folder, dirs, names in os.walk(top):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        seen += len(dirs) + len(names)
        if seen > limit:
            raise InputError(
                f"{top}: more than {limit:,} files and folders under it, the most whyclip looks through in one "
                "folder: give a subfolder"
            )
        for name in names:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                path = Path(folder) / name
                if path.is_file():
                    files.append(path)
                    folders.add(folder)
    return ImageListing(top, sorted(files), len(folders))


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


def header_pixels(path: str | Path) -> int:
    """The pixels a file's header declares, 0 where it cannot be read (decoding says why):
    what a batch will hold once decoded, known before decoding it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size[0] * im.size[1]
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 0


def read_image_bytes(name: str, data: bytes) -> Image.Image:
    """Decode an uploaded image, with the same checks as :func:`read_image`."""
    if not data:
        raise InputError(f"{name}: empty file, not an image")
    return _decode(io.BytesIO(data), name)


@overload
def _decode(source: Path | BinaryIO, label: str, header_only: Literal[False] = False) -> Image.Image: ...
@overload
def _decode(source: Path | BinaryIO, label: str, header_only: Literal[True]) -> None: ...
def _decode(source: Path | BinaryIO, label: str, header_only: bool = False) -> Image.Image | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                if header_only:
                    return None
                im.seek(0)  # an animated image: its first frame
                im.load()
                return to_rgb(_upright(im, label))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            f"{label}: too many pixels to be a safe image (over {Image.MAX_IMAGE_PIXELS:,}): downscale it first"
        ) from None
    except UnidentifiedImageError:
        if _has_image_signature(source):
            raise InputError(
                f"{label}: truncated or corrupt image (it starts like one, but cannot be read): "
                "re-export or re-download it"
            ) from None
        raise InputError(f"{label}: not an image (no format Pillow reads): use a JPEG, PNG or WebP file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{label}: truncated or corrupt image ({exc}): re-export or re-download it") from None


ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(im: Image.Image) -> Image.Image:
    """:func:`rgb_pixels`, keeping the image's metadata (``info``: text chunks, EXIF)."""
    out = rgb_pixels(im)
    if out is not im:
        out.info = {k: v for k, v in im.info.items() if k != "transparency"}
    return out


def rgb_pixels(im: Image.Image) -> Image.Image:
    """8-bit RGB pixels of a decoded image, as a viewer shows it.

    - transparency (an alpha channel, or a palette's transparent entry) is composited onto
      white: ``round((c * a + 255 * (255 - a)) / 255)``;
    - 16-bit and 32-bit integer samples (``I;16*``, ``I``) are read as 16-bit and scaled,
      ``round(v / 257)`` (a plain conversion clips everything above 255 to white);
    - 32-bit float samples (``F``) are scaled from [0, 1] when they lie in it, else read as
      0-255, clipped;
    - CMYK: ``round((255 - c) * (255 - k) / 255)`` per channel; palette and grayscale by
      their colours.

    The arithmetic runs over bands of rows (:data:`STRIP_PIXELS` at a time) into one 8-bit
    output, so its wide temporaries stay small however large the image (a 40-megapixel RGBA
    image once needed about 2 GB of them).
    """
    mode = im.mode
    if mode in WIDE_INT_MODES:
        return _gray(_by_strips(im, 1, lambda v: np.rint(np.clip(v.astype(np.float64), 0, 65535) / 257)))
    if mode == "F":
        lo, hi = _extrema(im)  # the scale depends on the whole image's range
        scale = 255.0 if lo >= 0 and hi <= 1 else 1.0
        return _gray(_by_strips(im, 1, lambda v: np.rint(np.clip(np.nan_to_num(v.astype(np.float64)) * scale, 0, 255))))
    if mode == "CMYK":
        return Image.fromarray(_by_strips(im, 3, _cmyk_to_rgb), "RGB")
    if mode in ALPHA_MODES or (mode in ("P", "L", "RGB", "1") and "transparency" in im.info):
        return Image.fromarray(_by_strips(im.convert("RGBA"), 3, _over_white), "RGB")
    return im if mode == "RGB" else im.convert("RGB")


STRIP_PIXELS = 1 << 20  # pixels of one band of rows converted at a time


def _by_strips(im: Image.Image, channels: int, convert) -> np.ndarray:
    """``convert(rows)`` (values 0-255) over bands of rows of ``im``, into one uint8 array."""
    width, height = im.size
    out = np.empty((height, width, channels) if channels > 1 else (height, width), np.uint8)
    step = max(1, STRIP_PIXELS // max(1, width))
    for top in range(0, height, step):
        rows = np.asarray(im.crop((0, top, width, min(height, top + step))))
        out[top : top + len(rows)] = convert(rows)
    return out


def _extrema(im: Image.Image) -> tuple[float, float]:
    """Smallest and largest sample of a float image, NaN read as 0 (band by band)."""
    width, height = im.size
    lo, hi = np.inf, -np.inf
    step = max(1, STRIP_PIXELS // max(1, width))
    for top in range(0, height, step):
        rows = np.nan_to_num(np.asarray(im.crop((0, top, width, min(height, top + step)))).astype(np.float64))
        if rows.size:
            lo, hi = min(lo, float(rows.min())), max(hi, float(rows.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def _over_white(rgba: np.ndarray) -> np.ndarray:
    wide = rgba.astype(np.uint32)
    alpha = wide[..., 3:]
    return (wide[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    wide = cmyk.astype(np.uint32)
    return ((255 - wide[..., :3]) * (255 - wide[..., 3:]) + 127) // 255  # rounded: no product is k + 1/2


def _upright(im: Image.Image, label: str) -> Image.Image:
    """The image turned by its EXIF orientation; as stored when the EXIF data is unreadable."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception as exc:  # a broken EXIF block must not make the pixels unreadable
        log.warning("%s: EXIF orientation unreadable (%s): read as stored", label, exc)
        return im.copy()


def _gray(values: np.ndarray) -> Image.Image:
    return Image.merge("RGB", [Image.fromarray(values.astype(np.uint8, copy=False), "L")] * 3)


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


def expand_image_paths(paths: Sequence[str | Path], report: Callable[[str], None] | None = None) -> list[Path]:
    """Files as given, folders expanded to the images under them (:func:`list_images`:
    recursive, sorted); a folder with none is an :class:`InputError`. ``report`` is given
    each folder's count ("found 12 images in 3 folders under DIR")."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            listing = list_images(p)
            if not listing.files:
                raise InputError(listing.summary)
            if report is not None:
                report(listing.summary)
            out.extend(listing.files)
        else:
            out.append(p)
    return out


def embed_image_files(encoder, paths: Sequence[str | Path]):
    """Unit image vectors (N, dim) for image files (every file checked first)."""
    vectors, _ = encoder.embed_images(read_images(paths))
    return vectors


def prefetched(items: Sequence, work):
    """``work(item)`` for each item, in order, each next one computed in a background thread
    while the caller uses the current one (decoding the next batch of images while this one
    encodes: PIL and the image processor release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    if not items:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="whyclip-decode") as pool:
        future = pool.submit(work, items[0])
        for i in range(len(items)):
            result = future.result()
            if i + 1 < len(items):
                future = pool.submit(work, items[i + 1])
            yield result
