"""Maps drawn for people: each descriptor's map over the picture the model saw, as an array
(the dashboard shows it), as a PNG with its text and S (``whyclip explain --maps DIR``), and
one ``index.html`` that shows every map of every image together.

A map is drawn cell by cell (a cell is one patch, or one occlusion cell), never smoothed: a
patch is what the model reads. The colour says the sign (red: raises S, blue: lowers it) and
the opacity the size, against the map's own largest cell, so a cell near 0 leaves the
picture as it is.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from whyclip.store import DescriptorMap, Explanation, ImageMaps, InputError, new_mode, write_text_atomic

CMAP = "RdBu_r"  # diverging: 0 in the middle, the sign as the hue
MAX_ALPHA = 0.75  # the opacity of a map's largest cell
PANEL_INCHES = 3.3  # a map and its colour bar, in a PNG at 100 dpi
MARK = "<!-- whyclip maps -->"  # an index.html this module wrote (a folder holding one may be rewritten)


def _colours(values: np.ndarray, vmax: float) -> np.ndarray:
    """RGB in 0..1 of each value on the colour map, -vmax..vmax."""
    import matplotlib

    cmap = matplotlib.colormaps[CMAP]
    return np.asarray(cmap(np.clip(0.5 + values / (2 * vmax), 0.0, 1.0)))[..., :3]


def overlay(view: np.ndarray, grid: Any, vmax: float | None = None) -> np.ndarray:
    """The picture (``view``, (H, W, 3) uint8) with ``grid`` (rows of S) drawn over it cell by
    cell; (H, W, 3) uint8. ``vmax``: the |S| drawn at full colour (default: the grid's own
    largest); a cell's opacity is :data:`MAX_ALPHA` x |S| / vmax."""
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 2 or not g.size:
        raise ValueError(f"a map is a 2-D grid, got shape {g.shape}")
    h, w = view.shape[:2]
    vmax = float(vmax if vmax is not None else np.abs(g).max())
    rows = np.minimum((np.arange(h) * g.shape[0]) // h, g.shape[0] - 1)
    cols = np.minimum((np.arange(w) * g.shape[1]) // w, g.shape[1] - 1)
    cells = g[rows][:, cols]  # (H, W): each pixel's cell
    if vmax <= 0:
        return view.copy()
    alpha = (MAX_ALPHA * np.minimum(np.abs(cells) / vmax, 1.0))[..., None]
    out = (1 - alpha) * (view.astype(np.float64) / 255) + alpha * _colours(cells, vmax)
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def _panels(m: DescriptorMap, maps: ImageMaps) -> list[tuple[str, Any, str]]:
    """(title, grid, unit) of each map a descriptor has, exact first."""
    out = []
    if m.patches is not None:
        out.append((f"exact, last {maps.layers} layers", m.patches, "share of S per patch"))
    if m.dense is not None:
        out.append(("dense (ClearCLIP), does not add up", m.dense, "S of each patch"))
    if m.occlusion is not None:
        out.append((f"occlusion, {maps.occlusion_grid}x{maps.occlusion_grid}", m.occlusion, "fall in S when masked"))
    return out


def caption(m: DescriptorMap, scale_note: str = "") -> str:
    """One line under a map: S, where it is located, and the agreement with occlusion."""
    parts = [f"S {m.score:.2f}"]
    if m.remainder is not None:
        parts.append(f"patches {m.score - m.remainder:+.2f}, remainder {m.remainder:+.2f}")
    if m.agreement is not None:
        parts.append(f"agreement with occlusion {m.agreement:+.2f}")
    elif m.occlusion is not None and m.patches is not None:
        parts.append("agreement: none (a flat map)")
    return ", ".join(parts) + scale_note


def figure_png(view: np.ndarray, m: DescriptorMap, maps: ImageMaps, path: Path) -> None:
    """One descriptor's PNG: the picture with each of its maps over it, side by side, each
    with its colour bar in S; above them the descriptor, its class and its S."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    panels = _panels(m, maps)
    width, height = PANEL_INCHES * len(panels), 3.5
    fig = Figure(figsize=(width, height), dpi=100)  # axes placed by hand: a layout engine doubled the time
    for i, (title, grid, unit) in enumerate(panels):
        g = np.asarray(grid, dtype=np.float64)
        vmax = float(np.abs(g).max()) or 1.0
        left = (i * PANEL_INCHES + 0.1) / width
        ax = fig.add_axes((left, 0.04, 2.4 / width, 2.4 / height))
        ax.imshow(overlay(view, g, vmax), interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        cax = fig.add_axes((left + 2.5 / width, 0.04, 0.1 / width, 2.4 / height))
        bar = fig.colorbar(ScalarMappable(Normalize(-vmax, vmax), CMAP), cax=cax)
        bar.ax.tick_params(labelsize=7)
        bar.set_label(unit, fontsize=7)
    label = m.descriptor or f"{m.prompt} (no descriptors: baseline prompt)"
    fig.suptitle(f"{_wrap(label, 70)}\n{m.class_name}   {caption(m)}", fontsize=9)
    fig.savefig(path, format="png")


def _place(tmp: Path, target: Path, tries: int = 20) -> None:
    """Rename the finished folder ``tmp`` to ``target``. An existing ``target`` (an earlier
    run's, or another process's writing the same image now) is first renamed aside, then
    removed, so a reader sees a whole folder or none, and two writers never fail each other:
    the last one's folder stays."""
    for _ in range(tries):
        try:
            os.replace(tmp, target)
            return
        except OSError:  # target is there and not empty
            aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            try:
                os.replace(target, aside)  # onto the empty folder just made
            except FileNotFoundError:
                pass  # another writer moved it first
            except OSError:
                pass  # another writer replaced it between; try again
            shutil.rmtree(aside, ignore_errors=True)
    os.replace(tmp, target)  # the last try: its error, if any, is the user's to read


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:2]) or text


def slug(text: str, limit: int = 40) -> str:
    """A file-name part: letters, digits and dashes only."""
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:limit].strip("-")
    return s or "x"


def check_maps_dir(out: Path) -> None:
    """``out`` may be new, empty, or a folder these maps were written to before (its
    ``index.html`` says so); anything else is refused before any work."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--maps {out}: it is a file; give a folder (new, empty, or one --maps wrote)")
    if out.is_dir() and any(out.iterdir()):
        index = out / "index.html"
        if not (index.is_file() and MARK in index.read_text(encoding="utf-8", errors="replace")[:2000]):
            raise InputError(
                f"--maps {out}: the folder holds other files; give a new or empty folder (or one --maps wrote)"
            )


class MapsWriter:
    """Writes each explained image's maps under ``out`` as it comes (a folder per image,
    made whole in a temporary folder and renamed into place), then one ``index.html``."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.images: list[dict[str, Any]] = []
        self._names: set[str] = set()

    def add(self, explanation: Explanation, view: np.ndarray) -> Path:
        maps = explanation.maps
        if maps is None:
            raise ValueError("this explanation has no maps")
        name = slug(Path(explanation.image).stem or "image")
        base, k = name, 2
        while name in self._names:
            name, k = f"{base}-{k}", k + 1
        self._names.add(name)
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.out))
        try:
            from PIL import Image

            Image.fromarray(view).save(tmp / "view.png")
            files = []
            for i, m in enumerate(maps.maps):
                file = f"{i:03d}-{slug(m.class_name, 30)}-{slug(m.descriptor or 'baseline', 40)}.png"
                figure_png(view, m, maps, tmp / file)
                files.append(file)
            import json

            (tmp / "maps.json").write_text(
                json.dumps({"image": explanation.image, **maps.to_dict()}, ensure_ascii=False), encoding="utf-8"
            )
            os.chmod(tmp, new_mode(folder=True))
            target = self.out / name
            _place(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.images.append({"name": name, "explanation": explanation, "files": files})
        return target

    def finish(self, note: str | None = None) -> Path:
        """Write ``index.html`` (whole), with ``note`` at its top (a random-weight model,
        say), and return its path."""
        index = self.out / "index.html"
        write_text_atomic(index, index_html(self.images, note))
        return index


def index_html(images: list[dict[str, Any]], note: str | None = None) -> str:
    """The page that shows every map together: per image, the picture the model saw, then
    per class its descriptors' maps with S, the remainder and the agreement."""
    e = html.escape
    parts = [
        "<!doctype html>",
        MARK,
        '<html lang="en"><head><meta charset="utf-8"><title>whyclip maps</title><style>',
        "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
        "figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}"
        "figcaption{font-size:.85em;max-width:40em}"
        "img.view{width:224px;image-rendering:pixelated}"
        "table{border-collapse:collapse;font-size:.9em;margin:.5em 0 1em}"
        "td,th{padding:.15em .6em;border-bottom:1px solid #ddd;text-align:left}"
        "td.n{text-align:right;font-variant-numeric:tabular-nums}.note{background:#fff4d6;padding:.5em}",
        "</style></head><body><h1>Where in the image</h1>",
    ]
    if note:
        parts.append(f'<p class="note">{e(note)}</p>')
    parts.append(
        "<p>Each map is drawn cell by cell over the picture the model saw (after resizing and cropping): red "
        "raises the descriptor's S, blue lowers it, and the stronger the colour the larger the cell's share of "
        "the map's largest cell.</p><ul>"
        "<li><b>exact</b>: each patch's share of S through the last attention layers; the patches plus the "
        "remainder are S exactly. A large remainder means much of S is not located by the map.</li>"
        "<li><b>dense</b> (ClearCLIP, with --dense): sharper, but it does not add up to S.</li>"
        "<li><b>occlusion</b>: how much S falls when each cell is masked (the independent check). The "
        "<b>agreement</b> is Spearman's rank correlation between the exact map (summed into the same cells) and "
        "occlusion: near 1, the map can be trusted for where; near 0 or below, it cannot.</li></ul>"
    )
    for item in images:
        ex: Explanation = item["explanation"]
        maps = ex.maps
        assert maps is not None
        name = item["name"]
        parts.append(f'<h2 id="{e(name)}">{e(ex.image)}</h2>')
        parts.append(
            f'<p><img class="view" src="{e(name)}/view.png" alt="the picture the model saw"><br>'
            f"predicted <b>{e(ex.predicted)}</b> (library {e(ex.library)} v{ex.version}); maps: {e(maps.method)}"
            + (
                f", exact over the last {maps.layers} attention layers, a {maps.grid[0]}x{maps.grid[1]} patch grid"
                if maps.grid
                else ""
            )
            + (f"; occlusion on a {maps.occlusion_grid}x{maps.occlusion_grid} grid" if maps.occlusion_grid else "")
            + f' &middot; <a href="{e(name)}/maps.json">maps.json</a></p>'
        )
        if maps.note:
            parts.append(f'<p class="note">{e(maps.note)}</p>')
        by_class: dict[str, list[tuple[DescriptorMap, str]]] = {}
        for m, file in zip(maps.maps, item["files"], strict=True):
            by_class.setdefault(m.class_name, []).append((m, file))
        for cls, rows in by_class.items():
            parts.append(f"<h3>{e(cls)}</h3><table><tr><th>descriptor</th><th>S</th>")
            parts.append("<th>in the patches</th><th>remainder</th><th>agreement with occlusion</th></tr>")
            for m, _ in rows:
                located = "-" if m.remainder is None else f"{m.score - m.remainder:+.2f}"
                rem = "-" if m.remainder is None else f"{m.remainder:+.2f}"
                agree = "-" if m.agreement is None else f"{m.agreement:+.2f}"
                parts.append(
                    f"<tr><td>{e(m.descriptor or m.prompt)}</td><td class=n>{m.score:.2f}</td>"
                    f"<td class=n>{located}</td><td class=n>{rem}</td><td class=n>{agree}</td></tr>"
                )
            parts.append("</table>")
            for m, file in rows:
                parts.append(  # the PNG carries the descriptor, its class and S
                    f'<figure><img src="{e(name)}/{e(file)}" alt="{e(m.descriptor or m.prompt)}: {e(caption(m))}">'
                    "</figure>"
                )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def maps_note(encoder) -> str | None:
    """What the page says first about the model: a random-weight test model's maps mean
    nothing."""
    from whyclip.ingest.encoder.loading import RANDOM_WEIGHTS, is_test_model

    name = getattr(encoder, "name", "")
    return f"{name} {RANDOM_WEIGHTS}, and so do its maps." if is_test_model(name) else None
