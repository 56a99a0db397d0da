"""Deterministic sample images for the whyclip demo dashboard.

Every picture is drawn with plain PIL shapes on a supersampled canvas and then
scaled down, so the output is smooth, needs no downloads and is byte-for-byte
identical on every call.  File names are the class (from ``library.json``)
that each image depicts; see :data:`SAMPLE_CLASSES`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

Color = tuple[int, int, int]
Point = tuple[float, float]

SUPERSAMPLE = 4

#: file name -> class in ``ui/demo/library.json`` it depicts (in drawing order).
SAMPLE_CLASSES: dict[str, str] = {
    "tree_frog.png": "tree frog",
    "banana.png": "banana",
    "stop_sign.png": "stop sign",
    "sunflower.png": "sunflower",
    "ladybug.png": "ladybug",
    "traffic_light.png": "traffic light",
}


class _Pen:
    """Draws in unit coordinates (0..1 across the square canvas)."""

    def __init__(self, image: Image.Image) -> None:
        self.image, self.draw, self.s = image, ImageDraw.Draw(image), image.width

    def xy(self, points: Sequence[Point]) -> list[Point]:
        return [(x * self.s, y * self.s) for x, y in points]

    def w(self, width: float) -> int:
        return max(1, round(width * self.s)) if width else 0

    def ellipse(
        self, box: Sequence[float], fill: Color | None, outline: Color | None = None, width: float = 0.0
    ) -> None:
        self.draw.ellipse(self.xy([(box[0], box[1]), (box[2], box[3])]), fill, outline, self.w(width))

    def circle(
        self, cx: float, cy: float, r: float, fill: Color | None, outline: Color | None = None, width: float = 0.0
    ) -> None:
        self.ellipse((cx - r, cy - r, cx + r, cy + r), fill, outline, width)

    def poly(
        self, points: Sequence[Point], fill: Color | None, outline: Color | None = None, width: float = 0.0
    ) -> None:
        self.draw.polygon(self.xy(points), fill=fill, outline=outline, width=self.w(width))

    def line(self, points: Sequence[Point], fill: Color, width: float, edge: Color | None = None) -> None:
        if edge is not None:
            self.line(points, edge, width + 0.012)
        self.draw.line(self.xy(points), fill=fill, width=self.w(width), joint="curve")
        for x, y in (points[0], points[-1]):  # round caps
            self.circle(x, y, width / 2, fill)


def _gradient(size: int, top: Color, bottom: Color) -> Image.Image:
    """A square image shading vertically from ``top`` to ``bottom``."""
    mask = Image.linear_gradient("L").resize((size, size), Image.Resampling.BILINEAR)
    return Image.composite(Image.new("RGB", mask.size, bottom), Image.new("RGB", mask.size, top), mask)


def _lens(
    x: float, y: float, length: float, width: float, angle: float, n: int = 24, bulge: float = 0.7
) -> list[Point]:
    """Leaf/petal outline starting at (x, y) and pointing ``angle`` degrees."""
    half = [(i / n * length, width / 2 * math.sin(math.pi * i / n) ** bulge) for i in range(n + 1)]
    pts = half + [(px, -py) for px, py in reversed(half)]
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [(x + px * ca - py * sa, y + px * sa + py * ca) for px, py in pts]


def _tree_frog(p: _Pen) -> None:
    green, dark, cream, pad = (70, 200, 55), (25, 110, 30), (240, 238, 190), (255, 140, 30)
    p.line([(-0.05, 0.86), (0.5, 0.8), (1.05, 0.7)], (110, 70, 35), 0.07)
    for x, y, a in ((0.1, 0.85, 200), (0.85, 0.72, -40), (0.93, 0.71, 30), (-0.03, 0.02, 28), (1.03, 0.04, 150)):
        p.poly(_lens(x, y, 0.22, 0.1, a), (35, 130, 50), (20, 80, 30), 0.004)
    for s in (-1, 1):  # folded hind legs and feet
        p.ellipse((0.5 + s * 0.3 - 0.12, 0.56, 0.5 + s * 0.3 + 0.12, 0.8), green, dark, 0.008)
        for k in (-1, 0, 1):
            toe = (0.5 + s * (0.38 + 0.02 * k), 0.82 + 0.01 * k * s)
            p.line([(0.5 + s * 0.34, 0.78), toe], green, 0.025)
            p.circle(*toe, 0.02, pad, dark, 0.004)
    p.ellipse((0.26, 0.4, 0.74, 0.82), green, dark, 0.008)
    p.ellipse((0.36, 0.58, 0.64, 0.81), cream)
    for s in (-1, 1):  # front legs with sticky toe pads
        p.line([(0.5 + s * 0.16, 0.58), (0.5 + s * 0.13, 0.78)], green, 0.05, dark)
        for k in (-1, 0, 1):
            p.circle(0.5 + s * 0.13 + 0.035 * k, 0.8 - 0.01 * abs(k), 0.02, pad, dark, 0.004)
    p.ellipse((0.22, 0.26, 0.78, 0.6), green, dark, 0.008)
    for s in (-1, 1):  # protruding eyes
        cx = 0.5 + s * 0.19
        p.circle(cx, 0.29, 0.115, green, dark, 0.008)
        p.circle(cx, 0.29, 0.085, (225, 45, 25))
        p.ellipse((cx - 0.018, 0.23, cx + 0.018, 0.35), (10, 10, 10))
        p.circle(cx - 0.03, 0.25, 0.015, (255, 255, 255))
        p.circle(0.5 + s * 0.04, 0.42, 0.008, dark)
    p.draw.arc(p.xy([(0.3, 0.3), (0.7, 0.53)]), 20, 160, fill=dark, width=p.w(0.01))


def _banana(p: _Pen) -> None:
    yellow, edge, brown = (250, 215, 50), (170, 120, 20), (95, 60, 25)
    p.ellipse((0.15, 0.72, 0.85, 0.8), (190, 195, 205))

    def arc(t: float, r: float = 0.5) -> tuple[float, float]:
        return (
            0.5 + r * math.cos(math.radians(30 + 120 * t)),
            0.15 + r * math.sin(math.radians(30 + 120 * t)),
        )

    n = 40
    thick = [0.09 * math.sin(math.pi * i / n) ** 0.5 + 0.01 for i in range(n + 1)]
    p.poly(
        [arc(i / n, 0.5 + thick[i]) for i in range(n + 1)] + [arc(i / n, 0.5 - thick[i]) for i in range(n, -1, -1)],
        yellow,
        edge,
        0.008,
    )
    p.poly(
        [arc(i / n, 0.5 - 0.2 * thick[i]) for i in range(n + 1)]
        + [arc(i / n, 0.5 - 0.8 * thick[i]) for i in range(n, -1, -1)],
        (255, 240, 140),
    )
    p.line([arc(i / n, 0.5 + 0.35 * thick[i]) for i in range(4, n - 3)], (225, 180, 40), 0.006)
    p.line([arc(1.0), arc(1.09)], (120, 130, 40), 0.035)
    p.circle(*arc(1.1), 0.02, brown)
    p.circle(*arc(0.0), 0.015, brown)
    spots = ((0.3, 0.04, 0.012), (0.45, 0.06, 0.009), (0.62, 0.03, 0.014), (0.75, 0.05, 0.01))
    for t, dr, r in spots:
        p.circle(*arc(t, 0.5 + dr), r, (140, 95, 30))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's built-in font, scalable when FreeType is available."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # no FreeType, or Pillow < 10.1
        return ImageFont.load_default()


def _text(p: _Pen, text: str, cx: float, cy: float, width: float, fill: Color) -> None:
    """Draw ``text`` centred at (cx, cy), scaled to ``width`` of the canvas."""
    target = width * p.s
    font = _font(100)
    left, top, right, bottom = p.draw.textbbox((0, 0), text, font=font)
    if isinstance(font, ImageFont.FreeTypeFont):
        font = _font(max(1, round(100 * target / (right - left))))
        assert isinstance(font, ImageFont.FreeTypeFont)  # as at size 100: FreeType is there
        p.draw.text(
            (cx * p.s, cy * p.s),
            text,
            font=font,
            fill=fill,
            anchor="mm",
            stroke_width=max(1, round(font.size / 22)),
            stroke_fill=fill,
        )
        return
    mask = Image.new("L", (int(right - left + 2), int(bottom - top + 2)))  # bitmap font: draw small, scale up
    ImageDraw.Draw(mask).text((1 - left, 1 - top), text, font=font, fill=255)
    mask = mask.resize((round(target), round(target * mask.height / mask.width)))
    p.image.paste(fill, (round(cx * p.s - mask.width / 2), round(cy * p.s - mask.height / 2)), mask)


def _stop_sign(p: _Pen) -> None:
    p.line([(0.5, 0.5), (0.5, 1.05)], (150, 150, 155), 0.05, (90, 90, 95))

    def octagon(r: float) -> list[tuple[float, float]]:
        return [
            (
                0.5 + r * math.cos(math.radians(22.5 + 45 * k)),
                0.42 + r * math.sin(math.radians(22.5 + 45 * k)),
            )
            for k in range(8)
        ]

    p.poly(octagon(0.36), (250, 250, 250), (120, 120, 120), 0.004)
    p.poly(octagon(0.33), (200, 20, 30))
    _text(p, "STOP", 0.5, 0.42, 0.46, (255, 255, 255))


def _sunflower(p: _Pen) -> None:
    stem, leaf, cx, cy = (60, 140, 45), (50, 125, 40), 0.5, 0.38
    p.line([(0.5, 0.5), (0.52, 0.75), (0.5, 1.02)], stem, 0.04)
    for a in (-25, 205):
        pts = _lens(0.51, 0.76, 0.26, 0.13, a)
        p.poly(pts, leaf, (30, 85, 25), 0.004)
        p.line([pts[0], pts[len(pts) // 4 - 1]], (30, 85, 25), 0.005)
    for layer, colour, offset in ((0, (235, 150, 20), 9.0), (1, (255, 205, 30), 0.0)):
        for k in range(20):
            petal = offset + 18 * k
            x, y = cx + 0.09 * math.cos(math.radians(petal)), cy + 0.09 * math.sin(math.radians(petal))
            p.poly(_lens(x, y, 0.2 - 0.02 * layer, 0.075, petal), colour, (200, 120, 10), 0.003)
    p.circle(cx, cy, 0.125, (105, 60, 25), (70, 40, 15), 0.006)
    for i in range(1, 140):  # seeds on a golden-angle spiral
        r, theta = 0.0098 * math.sqrt(i), math.radians(137.508 * i)
        p.circle(cx + r * math.cos(theta), cy + r * math.sin(theta), 0.0055, (60, 35, 15))


def _ladybug(p: _Pen) -> None:
    black, red = (20, 20, 20), (215, 30, 30)
    p.poly(_lens(-0.05, 0.95, 1.3, 0.75, -38, bulge=0.8), (80, 165, 60), (45, 110, 35), 0.006)
    p.line([(-0.05, 0.95), (0.98, 0.15)], (120, 190, 90), 0.008)
    for s in (-1, 1):
        for y, dy in ((0.45, -0.06), (0.58, 0.0), (0.7, 0.07)):
            knee = (0.5 + s * 0.28, y + dy)
            p.line([(0.5, y), knee, (knee[0] + s * 0.05, knee[1] + 0.05)], black, 0.016)
        p.line([(0.5 + s * 0.04, 0.22), (0.5 + s * 0.1, 0.12), (0.5 + s * 0.14, 0.11)], black, 0.01)
    p.ellipse((0.38, 0.17, 0.62, 0.33), black)
    for s in (-1, 1):
        p.circle(0.5 + s * 0.07, 0.22, 0.022, (250, 250, 250))
    p.ellipse((0.26, 0.28, 0.74, 0.84), red, black, 0.008)
    p.draw.chord(p.xy([(0.3, 0.26), (0.7, 0.48)]), 180, 360, fill=black)
    p.line([(0.5, 0.37), (0.5, 0.83)], black, 0.01)
    for x, y, r in ((0.38, 0.48, 0.045), (0.4, 0.66, 0.05), (0.33, 0.57, 0.03), (0.44, 0.77, 0.03)):
        for s in (-1, 1):
            p.circle(0.5 + s * (0.5 - x), y, r, black)
    p.ellipse((0.3, 0.42, 0.36, 0.5), (255, 150, 140))


def _traffic_light(p: _Pen) -> None:
    p.line([(0.5, 0.7), (0.5, 1.05)], (70, 75, 80), 0.06)
    p.draw.rounded_rectangle(
        p.xy([(0.33, 0.06), (0.67, 0.82)]), radius=p.w(0.05), fill=(35, 38, 40), outline=(15, 15, 15), width=p.w(0.006)
    )
    lamps = (((255, 45, 35), 0.19), ((120, 85, 20), 0.44), ((25, 80, 40), 0.69))
    for lit, (colour, y) in enumerate(lamps):
        p.draw.chord(p.xy([(0.37, y - 0.125), (0.63, y + 0.09)]), 180, 360, fill=(22, 22, 24))
        p.circle(0.5, y, 0.1, (15, 15, 15))
        p.circle(0.5, y, 0.085, colour)
        if lit == 0:
            p.circle(0.47, y - 0.03, 0.03, (255, 170, 160))


_DRAWERS: dict[str, tuple[Callable[[_Pen], None], Color, Color]] = {
    "tree_frog.png": (_tree_frog, (190, 225, 245), (120, 170, 150)),
    "banana.png": (_banana, (235, 240, 250), (200, 210, 225)),
    "stop_sign.png": (_stop_sign, (120, 180, 240), (215, 235, 250)),
    "sunflower.png": (_sunflower, (90, 160, 235), (200, 230, 250)),
    "ladybug.png": (_ladybug, (200, 235, 190), (140, 195, 130)),
    "traffic_light.png": (_traffic_light, (150, 195, 240), (225, 235, 245)),
}


def draw_samples(directory: str | Path, size: int = 224) -> list[Path]:
    """Draw the sample images into ``directory`` and return their paths.

    Paths come back in the order of :data:`SAMPLE_CLASSES`; each image is a
    ``size`` x ``size`` RGB PNG.  Output is deterministic.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SAMPLE_CLASSES:
        drawer, top, bottom = _DRAWERS[name]
        canvas = _gradient(size * SUPERSAMPLE, top, bottom)
        drawer(_Pen(canvas))
        path = out / name
        tmp = out / f".{name}.{os.getpid()}.tmp"  # a server reading the folder never sees half a file
        canvas.resize((size, size), Image.Resampling.LANCZOS).save(tmp, format="PNG")
        os.replace(tmp, path)
        paths.append(path)
    return paths
