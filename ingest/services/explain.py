"""The explanation pipeline, written once: every surface (the command line, the HTTP service,
the dashboard, the demo and the Python API) calls it and only reads input and renders output.

Two steps, so that bad input fails before a model loads:

1. :func:`plan_explain` resolves the library to one version and loads it (a request then uses
   that version from start to end), checks the options against it (aggregate, the two classes
   to compare, the bounds) and reads the calibration the options ask for;
2. :meth:`ExplainPlan.with_encoder` checks the encoder against the library (an old id of the
   same model is accepted) and looks up the name/description split; the :class:`Explainer` it
   returns explains image vectors, decoded pictures or image files, in batches whose decoded
   pixels stay within :attr:`ExplainLimits.max_batch_pixels`.

A version deleted while it is explained ends in :class:`LibraryNotFound` (the library reads
its descriptor rows when it needs them and says so when they are gone), never in a wrong or
half answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whyclip import ingest
from whyclip.ingest.encoder.legacy_ids import check_library_encoder
from whyclip.ingest.encoder.prepared import join_prepared, prepare_one
from whyclip.ingest.images import header_pixels, prefetched, read_image
from whyclip.ingest.services.maps import (
    MapOptions,
    check_map_options,
    decompose_image,
    image_maps,
    worst_case_maps,
)
from whyclip.store import (
    AGGREGATES,
    CalibrationInfo,
    Explanation,
    ImageMaps,
    InputError,
    Library,
    Store,
    StoreVerdicts,
    WhyclipError,
    calibration_for,
)

IMAGE_BATCH = 32  # images decoded, encoded and scored together


@dataclass(frozen=True)
class ExplainOptions:
    """What an explanation shows: the ``top`` classes with their descriptors, the contrast of
    ``compare`` (default: the top two), ``retrieve`` library-wide best descriptors, the
    ``aggregate`` (default: the library's) and probabilities from the version's stored
    calibration when ``calibrated``. A shown class lists its best ``descriptors`` (default:
    the limit's ``max_descriptors_listed``) and counts the rest; its score uses them all.
    ``maps``: where in the image, for every listed descriptor (None: no maps)."""

    top: int = 5
    aggregate: str | None = None
    compare: tuple[str, ...] | None = None  # two class names (plan_explain checks)
    retrieve: int = 10
    calibrated: bool = False
    descriptors: int | None = None
    maps: MapOptions | None = None


@dataclass(frozen=True)
class ExplainLimits:
    """Bounds every surface inherits, checked before any work: classes shown, descriptors
    retrieved, descriptors listed per shown class (the rest are counted, not listed), the
    decoded pixels held at once (a batch closes early rather than pass it) and the maps one
    image may get (each a small grid of numbers; the occlusion check costs the same for any
    number of them)."""

    max_top: int = 1000
    max_retrieve: int = 1000
    max_descriptors_listed: int = 1000
    max_batch_pixels: int = 32 * 4096 * 4096  # 32 pictures of 16.8 Mpx; about 1.6 GB of RGB
    max_maps: int = 256


DEFAULT_LIMITS = ExplainLimits()


@dataclass(frozen=True)
class ImageFailure:
    """An image that could not be explained, and why (one line naming the file)."""

    image: str
    error: str


def open_encoder(store: Store, model: str | None, device: str | None = None, precision: str = "auto"):
    """The CLIP encoder for ``model`` with its precision verdicts kept in ``store`` (a precision
    check then runs once per model and platform, whichever command or process runs it)."""
    return ingest.load_encoder(model, device, precision, verdicts=StoreVerdicts(store))


def check_options(options: ExplainOptions, limits: ExplainLimits = DEFAULT_LIMITS) -> None:
    """The options alone (no library needed): one :class:`InputError` naming the bad one."""
    if options.aggregate is not None and options.aggregate not in AGGREGATES:
        raise InputError(f"unknown aggregate {options.aggregate!r}: choose one of {', '.join(AGGREGATES)}")
    if not 1 <= options.top <= limits.max_top:
        raise InputError(f"top must be between 1 and {limits.max_top} (got {options.top})")
    if not 0 <= options.retrieve <= limits.max_retrieve:
        raise InputError(f"retrieve must be between 0 and {limits.max_retrieve} (got {options.retrieve})")
    if options.descriptors is not None and not 1 <= options.descriptors <= limits.max_descriptors_listed:
        raise InputError(
            f"descriptors must be between 1 and {limits.max_descriptors_listed} (got {options.descriptors})"
        )
    if options.compare is not None and len(options.compare) != 2:
        raise InputError(f"compare takes exactly two class names (got {len(options.compare)})")
    if options.maps is not None:
        check_map_options(options.maps)


@dataclass(frozen=True)
class ExplainPlan:
    """A library version resolved and checked for ``options``, before any model loads."""

    store: Store
    library: Library
    options: ExplainOptions
    calibration: CalibrationInfo | None
    limits: ExplainLimits

    def with_encoder(self, encoder, name_split=None, *, split: bool = True) -> Explainer:
        """The explainer for images embedded by ``encoder``: refused unless it made the
        library's vectors. ``name_split`` is the version's bare-descriptor scorer (or the
        note saying why there is none) when a surface keeps it cached; else it is looked up,
        unless ``split`` is false (no name/description split, and no note about it)."""
        check_library_encoder(self.library, encoder)  # read only: an old id of this model is accepted
        if self.options.maps is not None and not hasattr(encoder, "map_model"):
            raise InputError(
                f"maps need a CLIP image tower, and this encoder ({type(encoder).__name__}) has none: "
                "explain without maps, or with a CLIP model"
            )
        if name_split is None and split:
            name_split = self.library.bare_scorer(encoder.cache_key)
        return Explainer(self, encoder, name_split)


def plan_explain(
    store: Store,
    library: str,
    version: int | None = None,
    options: ExplainOptions = ExplainOptions(),
    *,
    load: Callable[[str, int | None], Library] | None = None,
    limits: ExplainLimits = DEFAULT_LIMITS,
) -> ExplainPlan:
    """Resolve ``library`` (newest, or ``version``) and check ``options`` against it.
    ``load`` gives a loaded version (a surface's cache); by default the store loads it."""
    check_options(options, limits)
    lib = (load or store.load)(library, version)
    for name in options.compare or ():
        lib.class_position(name)  # an unknown class fails here, naming close ones
    if options.maps is not None:
        listed = options.descriptors or limits.max_descriptors_listed
        most = worst_case_maps(lib, options.top, options.compare, listed)
        if most > limits.max_maps:
            raise InputError(
                f"maps for up to {most:,} descriptors per image is over the limit of {limits.max_maps}: "
                f"list fewer per class (descriptors {max(1, limits.max_maps // max(2, options.top + 2))}) "
                "or show fewer classes (top)"
            )
    aggregate = options.aggregate or lib.info.aggregate
    cal = (
        calibration_for(store.engine, lib.info.id, lib.info.name, lib.info.version, aggregate)
        if options.calibrated
        else None
    )
    return ExplainPlan(store, lib, options, cal, limits)


class Explainer:
    """Explains images with one library version and one encoder (made by
    :meth:`ExplainPlan.with_encoder`); never mutated, so threads may share one."""

    def __init__(self, plan: ExplainPlan, encoder, name_split):
        self.plan = plan
        self.library = plan.library
        self.encoder = encoder
        self.name_split = name_split

    def explain_vectors(self, vectors: np.ndarray, names: Sequence[str] | None = None) -> list[Explanation]:
        """Explain unit image vectors (rows of ``vectors``), named ``names``."""
        o = self.plan.options
        return self.library.explain(
            vectors,
            list(names) if names is not None else None,
            aggregate=o.aggregate,
            top=o.top,
            compare=(o.compare[0], o.compare[1]) if o.compare else None,
            retrieve=o.retrieve,
            calibration=self.plan.calibration,
            name_split=self.name_split,
            max_descriptors=self.plan.options.descriptors or self.plan.limits.max_descriptors_listed,
        )

    def maps(self, picture, explanation: Explanation, options: MapOptions | None = None) -> ImageMaps:
        """Where in ``picture`` (a PIL image, or its pixel values from the encoder's
        :meth:`map_model`) each descriptor ``explanation`` lists is seen: the exact
        decomposition maps, and the dense map and the occlusion check when ``options`` (default:
        the plan's, else the exact maps alone) ask for them. See :mod:`.maps`. The maps run in
        fp32: for an explanation made without maps in a lower precision, their S can differ
        from the listed S in the second decimal (with maps in the options, they are equal)."""
        options = options or self.plan.options.maps or MapOptions()
        check_map_options(options)
        model = self._map_model()
        pixels = picture if _is_tensor(picture) else model.pixels(picture)
        return image_maps(model, pixels, self.library, explanation, options, self._listed)

    @property
    def _listed(self) -> int:
        return self.plan.options.descriptors or self.plan.limits.max_descriptors_listed

    def _map_model(self):
        if not hasattr(self.encoder, "map_model"):
            raise InputError(f"maps need a CLIP image tower, and this encoder ({type(self.encoder).__name__}) has none")
        return self.encoder.map_model()

    def _explain_with_maps(self, prepared, pictures: Sequence | None, names: Sequence[str]) -> Iterator[Explanation]:
        """Explanations with their maps, one image at a time (maps with the occlusion check
        take seconds an image, so each is yielded as it is done). Where the tower
        decomposes, the decomposition's own forward pass (fp32) gives the image's vector, so
        the maps cost no second pass and explain exactly the scores shown; otherwise the
        images are encoded as usual and mapped by occlusion."""
        options = self.plan.options.maps or MapOptions()
        model = self._map_model()
        images = _per_image(prepared, pictures)
        vectors = None
        if model.reason is not None:
            vectors, _ = self.encoder.embed_images(prepared)
        for i, (image, name) in enumerate(zip(images, names, strict=True)):
            pixels = image if _is_tensor(image) else model.pixels(image)
            dec = None
            if vectors is None:
                dec = decompose_image(model, pixels, options)
                vector = (dec.embedding / np.linalg.norm(dec.embedding))[None].astype(np.float32)
            else:
                vector = vectors[i : i + 1]
            (e,) = self.explain_vectors(vector, [name])
            yield dataclasses.replace(
                e, maps=image_maps(model, pixels, self.library, e, options, self._listed, decomposition=dec)
            )

    def explain_pictures(self, pictures: Sequence, names: Sequence[str] | None = None) -> list[Explanation]:
        """Explain decoded pictures (PIL images); their pixels together stay within the limit.
        With maps in the options, each explanation carries them."""
        check_pixels(pictures, self.plan.limits)
        prepare = getattr(self.encoder, "prepare_images", None)
        prepared = prepare(list(pictures)) if prepare and pictures else list(pictures)
        if self.plan.options.maps is not None:
            named = list(names) if names is not None else [f"image {i}" for i in range(len(pictures))]
            return list(self._explain_with_maps(prepared, pictures, named))
        vectors, _ = self.encoder.embed_images(prepared)
        return self.explain_vectors(vectors, names)

    def explain_prepared(self, prepared, names: Sequence[str]) -> list[Explanation]:
        """Explain images a surface decoded and prepared under its own bounds (each by
        :func:`prepare_one`, then :func:`join_prepared`; the HTTP service's ``maps=true``).
        With maps in the options, each explanation carries them, as from the other paths."""
        if self.plan.options.maps is not None:
            return list(self._explain_with_maps(prepared, None, list(names)))
        vectors, _ = self.encoder.embed_images(prepared)
        return self.explain_vectors(vectors, names)

    def explain_files(self, paths: Sequence[str | Path], progress=None) -> Iterator[Explanation | ImageFailure]:
        """Explain image files in order, in batches: the next batch is decoded and
        preprocessed in a background thread while this one encodes. An unreadable image
        yields an :class:`ImageFailure` in its place and the others go on. ``progress(done,
        total)`` is called after each batch."""

        def decode(batch_paths):
            # each picture is prepared (shrunk to the tower's input) as soon as it is decoded,
            # so a batch never holds more than one full-size picture at a time
            batch, parts, failures = [], [], []
            for path in batch_paths:
                try:
                    parts.append(prepare_one(self.encoder, read_image(path)))
                    batch.append(path)
                except WhyclipError as exc:
                    failures.append(ImageFailure(str(path), str(exc)))
            return batch, join_prepared(parts), failures

        done = 0
        for batch, pictures, failures in prefetched(batches_of(paths, self.plan.limits), decode):
            yield from failures
            if len(batch) and self.plan.options.maps is not None:
                done += len(failures)
                for e in self._explain_with_maps(pictures, None, [str(p) for p in batch]):
                    yield e
                    done += 1
                    if progress is not None:  # an image at a time: maps may take seconds each
                        progress(done, len(paths))
                continue
            elif len(batch):
                vectors, _ = self.encoder.embed_images(pictures)
                yield from self.explain_vectors(vectors, [str(p) for p in batch])
            done += len(batch) + len(failures)
            if progress is not None:
                progress(done, len(paths))


def _is_tensor(x) -> bool:
    """Pixel values (a torch tensor), as opposed to a picture."""
    import torch

    return isinstance(x, torch.Tensor)


def _per_image(prepared, pictures: Sequence | None) -> list:
    """Each image of a prepared batch as maps take it: its pixel values (1, 3, H, W) where
    the encoder prepares pixels, else its picture."""
    pixels = getattr(prepared, "pixels", None)
    if pixels is not None:
        return [pixels[i : i + 1] for i in range(len(prepared))]
    return list(pictures if pictures is not None else prepared)


def batches_of(paths: Sequence[str | Path], limits: ExplainLimits = DEFAULT_LIMITS) -> list[list]:
    """Batches of at most ``IMAGE_BATCH`` files whose decoded pixels (from the headers) stay
    within ``limits.max_batch_pixels``; a file whose header cannot be read counts as nothing
    (decoding it will say why)."""
    out: list[list] = [[]]
    pixels = 0
    for path in paths:
        size = header_pixels(path)
        if out[-1] and (len(out[-1]) >= IMAGE_BATCH or pixels + size > limits.max_batch_pixels):
            out.append([])
            pixels = 0
        out[-1].append(path)
        pixels += size
    return out if out[0] else []


def check_pixels(pictures: Sequence, limits: ExplainLimits = DEFAULT_LIMITS) -> None:
    """Refuse decoded pictures whose pixels together pass ``limits.max_batch_pixels``."""
    check_pixel_total(sum(p.size[0] * p.size[1] for p in pictures), len(pictures), limits)


def check_pixel_total(total: int, n_images: int, limits: ExplainLimits = DEFAULT_LIMITS) -> None:
    """Refuse ``n_images`` images of ``total`` decoded pixels together over the bound of one call."""
    if total > limits.max_batch_pixels:
        raise InputError(
            f"{n_images} images of {total:,} pixels together are over the limit of "
            f"{limits.max_batch_pixels:,} for one call: explain them in smaller groups or downscale them"
        )
