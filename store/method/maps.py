"""Where in the image: the maps of an explanation's descriptors, as plain data (the numbers
come from :mod:`whyclip.ingest.encoder.decompose`; this module holds no model code).

Every map is in S, the unit people read (similarity x the logit scale), on the image as the
model saw it (the image processor's crop). ``patches`` is the exact decomposition: its cells
plus ``remainder`` are the descriptor's S for this image. ``dense`` (ClearCLIP) is sharper
and does not add up. ``occlusion`` is the independent check: how much S falls when each cell
of a coarse grid is masked, and ``agreement`` is Spearman's rank correlation between it and
the decomposition pooled to the same cells (None where either is flat).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: how each kind of map is described to people, wherever it is shown
MAP_KINDS = {
    "patches": "exact: each patch's share of S through the last {layers} attention layers; with the remainder it is S",
    "dense": "dense (ClearCLIP): sharper, but it does not add up to S",
    "occlusion": "occlusion: how much S falls when each cell is masked (the independent check)",
}


@dataclass(frozen=True)
class DescriptorMap:
    """One descriptor's maps on one image (grids of S, row by row)."""

    class_name: str
    descriptor: str  # "" for a class without descriptors (its baseline prompt is mapped)
    prompt: str
    score: float  # S of the prompt on this image, from the maps' own fp32 pass
    remainder: float | None = None  # S outside every patch (None: no decomposition, occlusion only)
    patches: list[list[float]] | None = None
    dense: list[list[float]] | None = None
    occlusion: list[list[float]] | None = None
    agreement: float | None = None  # Spearman's rho of patches (pooled) vs occlusion

    @property
    def located(self) -> float | None:
        """The part of S the patches hold (S minus the remainder)."""
        return None if self.remainder is None else self.score - self.remainder


@dataclass(frozen=True)
class ImageMaps:
    """The maps of one image's shown descriptors. ``method`` is ``decomposition`` (exact maps)
    or ``occlusion`` (the model's insides are not reachable: ``note`` says why); ``layers``
    the attention layers the exact maps are made of; ``grid`` the patch grid (rows, columns);
    ``occlusion_grid`` the check's grid side (None: not run)."""

    method: str
    grid: tuple[int, int] | None
    layers: int | None
    occlusion_grid: int | None
    dense: bool
    maps: list[DescriptorMap] = field(default_factory=list)
    note: str | None = None
    size: tuple[int, int] | None = None  # the model's input (height, width) in pixels, which the grids cover

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["grid"] = list(self.grid) if self.grid else None
        out["size"] = list(self.size) if self.size else None
        for m in out["maps"]:
            m["class"] = m.pop("class_name")
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageMaps:
        maps = [
            DescriptorMap(
                m["class"],
                m["descriptor"],
                m["prompt"],
                m["score"],
                m.get("remainder"),
                m.get("patches"),
                m.get("dense"),
                m.get("occlusion"),
                m.get("agreement"),
            )
            for m in d.get("maps", [])
        ]
        grid, size = d.get("grid"), d.get("size")
        return cls(
            d["method"],
            (int(grid[0]), int(grid[1])) if grid else None,
            d.get("layers"),
            d.get("occlusion_grid"),
            bool(d.get("dense")),
            maps,
            d.get("note"),
            (int(size[0]), int(size[1])) if size else None,
        )

    def of_class(self, name: str) -> list[DescriptorMap]:
        return [m for m in self.maps if m.class_name == name]
