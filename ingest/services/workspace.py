"""The Python API: :func:`whyclip.open` gives a :class:`Workspace`, one store and the encoders
it has loaded, with the same pipelines the command line and the HTTP service call::

    import whyclip

    wc = whyclip.open()  # the default data directory, or home=..., db=...
    wc.ingest("descriptors.json", library="animals")
    for exp in wc.explain(["frog.jpg"], library="animals"):
        print(exp.predicted, exp.classes[0].descriptors[0].descriptor)

Each method returns the project's records (:class:`~whyclip.store.Explanation`,
:class:`~whyclip.store.LibraryInfo`, ...), never ORM rows, and raises the project's errors
(:class:`~whyclip.store.WhyclipError` and its kinds) with a message saying what to do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from whyclip.ingest.cluster import RayOptions, import_ray, on_ray
from whyclip.ingest.datasets import read_dataset
from whyclip.ingest.encoder.loading import model_name
from whyclip.ingest.images import expand_image_paths
from whyclip.ingest.readers import ParsedLibrary
from whyclip.ingest.services.evaluate import EvalReport, plan_eval, run_eval
from whyclip.ingest.services.explain import (
    DEFAULT_LIMITS,
    ExplainLimits,
    ExplainOptions,
    ImageFailure,
    open_encoder,
    plan_explain,
)
from whyclip.ingest.services.library_ingest import IngestReport, check_ingest_options, plan_ingest, run_ingest
from whyclip.ingest.services.maps import MapOptions
from whyclip.store import DEFAULT_BASELINE, DEFAULT_TEMPLATE, Explanation, InputError, LibraryInfo, Store


class Workspace:
    """A store (its data directory and database) and the CLIP encoders loaded for it, each
    loaded once, on first use. Safe to share between threads."""

    def __init__(
        self,
        store: Store,
        *,
        device: str | None = None,
        precision: str = "auto",
        limits: ExplainLimits = DEFAULT_LIMITS,
    ):
        self.store = store
        self.device = device
        self.precision = precision
        self.limits = limits
        self._encoders: dict[str, object] = {}
        self._lock = threading.Lock()

    def encoder(self, model: str | None = None):
        """The encoder for ``model`` (a sentence-transformers name or a local folder; default
        clip-ViT-B-32), loaded once per workspace."""
        key = model_name(model)
        with self._lock:
            if key not in self._encoders:
                self._encoders[key] = open_encoder(self.store, model, self.device, self.precision)
            return self._encoders[key]

    # -- libraries ------------------------------------------------------------------------

    def libraries(self, every_version: bool = False) -> list[LibraryInfo]:
        """The newest version of each library (or every version)."""
        return self.store.libraries(every_version=every_version)

    def library(self, name: str, version: int | None = None) -> LibraryInfo:
        """What a library version is made of (newest by default)."""
        return self.store.library(name, version)

    def ingest(
        self,
        source: str | Path | Mapping[str, Sequence[str]] | ParsedLibrary,
        library: str,
        *,
        model: str | None = None,
        template: str = DEFAULT_TEMPLATE,
        baseline: str = DEFAULT_BASELINE,
        strict: bool = False,
        index: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        ray: RayOptions | str | bool | None = None,
    ) -> IngestReport:
        """Embed a descriptor library (a .json, .jsonl or .csv file, or ``{class: [descriptors]}``)
        into the next version of ``library``; each distinct prompt is embedded once. ``ray``:
        embed on a Ray cluster, as ``whyclip ingest --ray`` does (True: a local cluster for
        the call, or this process's own; an address; or :class:`RayOptions`)."""
        check_ingest_options(library, template, baseline)  # before a model loads
        if ray not in (None, False):
            import_ray()
        encoder = self.encoder(model)
        plan = plan_ingest(
            dict(source) if isinstance(source, Mapping) else source,
            library,
            encoder,
            template=template,
            baseline=baseline,
            strict=strict,
            index_factory=index,
        )
        with on_ray(encoder, ray, "text") as chosen:
            return run_ingest(self.store, plan, chosen, progress)

    # -- explanations ---------------------------------------------------------------------

    def explain(
        self,
        images,
        library: str,
        *,
        version: int | None = None,
        top: int = 5,
        aggregate: str | None = None,
        compare: tuple[str, str] | None = None,
        retrieve: int = 10,
        calibrated: bool = False,
        model: str | None = None,
        names: Sequence[str] | None = None,
        maps: bool | MapOptions = False,
    ) -> list[Explanation]:
        """Explain ``images`` with ``library``: image files or folders (paths), decoded
        pictures (PIL images) or unit image vectors (a 2-D array), as ``whyclip explain`` does.
        An unreadable file raises :class:`InputError` naming it (use :meth:`explain_files`
        to go on past such files). ``maps`` (True, or :class:`MapOptions` for the dense map
        and the occlusion check): each explanation's ``maps`` says where in the image each
        listed descriptor is seen (pictures and files only: vectors have no pixels)."""
        options = ExplainOptions(
            top=top,
            aggregate=aggregate,
            compare=tuple(compare) if compare else None,
            retrieve=retrieve,
            calibrated=calibrated,
            maps=(maps if isinstance(maps, MapOptions) else MapOptions()) if maps else None,
        )
        plan = plan_explain(self.store, library, version, options, limits=self.limits)
        explainer = plan.with_encoder(self.encoder(model or plan.library.info.encoder_name))
        if isinstance(images, np.ndarray):
            if options.maps is not None:
                raise InputError("maps need the images (files or PIL images), not their vectors: pass the images")
            return explainer.explain_vectors(images, names)
        items = [images] if isinstance(images, (str, Path)) or hasattr(images, "size") else list(images)
        if items and all(hasattr(x, "size") and not isinstance(x, (str, Path)) for x in items):
            return explainer.explain_pictures(items, names)
        if not all(isinstance(x, (str, Path)) for x in items):
            raise InputError(
                "images: give paths (files or folders), PIL images or a 2-D array of image vectors, not a mix"
            )
        out = []
        for result in explainer.explain_files(expand_image_paths(items)):
            if isinstance(result, ImageFailure):
                raise InputError(result.error)
            out.append(result)
        return out

    def explain_files(
        self,
        paths: Sequence[str | Path],
        library: str,
        *,
        version: int | None = None,
        model: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        **options,
    ) -> list[Explanation | ImageFailure]:
        """Explain image files and folders, in order, going on past unreadable ones: each is an
        :class:`ImageFailure` (the file and why) in its place."""
        plan = plan_explain(self.store, library, version, ExplainOptions(**options), limits=self.limits)
        explainer = plan.with_encoder(self.encoder(model or plan.library.info.encoder_name))
        return list(explainer.explain_files(expand_image_paths(list(paths)), progress))

    # -- evaluation -----------------------------------------------------------------------

    def eval(
        self,
        dataset: str | Path,
        library: str,
        *,
        version: int | None = None,
        name: str | None = None,
        skip_unmatched: bool = False,
        fudd: bool | None = None,
        model: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        ray: RayOptions | str | bool | None = None,
    ) -> EvalReport:
        """Score a labelled image set (a folder of class folders, or a path,label CSV) with a
        library and store the run for audits, as ``whyclip eval`` does (``ray``: the images
        embedded on a Ray cluster, as for :meth:`ingest`)."""
        lib = self.store.load(library, version)
        if ray not in (None, False):
            import_ray()
        plan = plan_eval(self.store, lib, read_dataset(dataset), name=name, skip_unmatched=skip_unmatched, fudd=fudd)
        started = time.perf_counter()
        encoder = self.encoder(model or lib.info.encoder_name)  # loaded here once per workspace
        loaded_in = time.perf_counter() - started
        with on_ray(encoder, ray, "image") as chosen:
            return run_eval(self.store, lib, plan, chosen, progress=progress, loaded_in=loaded_in)

    def close(self) -> None:
        """Release the database connections (the encoders go with the workspace)."""
        self.store.engine.dispose()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_workspace(
    home: str | Path | None = None,
    db: str | None = None,
    *,
    device: str | None = None,
    precision: str = "auto",
    create: bool = True,
) -> Workspace:
    """Open (or, with ``create``, create) the store in ``home`` (default: the per-user data
    directory, or $WHYCLIP_HOME) with metadata in ``db`` (an SQLAlchemy URL; default SQLite in
    ``home``, or $WHYCLIP_DB)."""
    return Workspace(Store.open(home, db, create=create), device=device, precision=precision)
