"""What the pages share: settings from the environment, and the store, libraries, encoder
and image vectors, cached across reruns and sessions (never mutated)."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from whyclip import ingest
from whyclip.ingest.encoder.legacy_ids import check_library_encoder
from whyclip.ingest.encoder.loading import RANDOM_WEIGHTS, is_test_model
from whyclip.ingest.services.explain import open_encoder
from whyclip.ingest.services.maps import MapOptions, decompose_image, image_maps
from whyclip.ingest.services.whatif import added_vectors
from whyclip.ingest.services.whatif import save_edit as publish
from whyclip.store import (
    AuditSettings,
    Explanation,
    ImageMaps,
    Library,
    LibraryInfo,
    Store,
    WhatIf,
    WhyclipError,
    browse,
    latest_calibration,
    list_runs,
    load_run,
)
from whyclip.store import audit as make_audit
from whyclip.ui.demo.samples import SAMPLE_CLASSES, draw_samples
from whyclip.ui.render.audit_report import to_html


@dataclass(frozen=True)
class Settings:
    home: str | None
    db: str | None
    library: str | None
    images: str | None
    model: str | None


def settings() -> Settings:
    env = os.environ.get
    return Settings(
        env("WHYCLIP_HOME"),
        env("WHYCLIP_DB"),
        env("WHYCLIP_UI_LIBRARY"),
        env("WHYCLIP_UI_IMAGES"),
        env("WHYCLIP_UI_MODEL"),
    )


@st.cache_resource(show_spinner=False)
def _store(home: str | None, db: str | None) -> Store:
    return Store.open(home, db, create=False)


@st.cache_resource(show_spinner="Loading the library ...", max_entries=8)
def _library(home: str | None, db: str | None, name: str, version: int) -> Library:
    return _store(home, db).load(name, version)


@st.cache_resource(show_spinner="Loading the CLIP model ...", max_entries=2)
def _encoder(model: str):
    """Loaded once per server, with its precision verdicts kept in the store (as every surface)."""
    s = settings()
    return open_encoder(_store(s.home, s.db), model)


_encoding = threading.local()  # each script run has its thread: did this run encode the image?


@st.cache_data(show_spinner=False, max_entries=256)
def _image_vector(model: str, digest: str, _data: bytes, _name: str) -> np.ndarray:
    _encoding.fresh = True  # runs on a cache miss only
    picture = ingest.images.read_image_bytes(_name, _data)
    return _encoder(model).embed_images([picture])[0]


@st.cache_resource(show_spinner=False, max_entries=8)
def _name_split(home: str | None, db: str | None, name: str, version: int, encoder_key: str):
    found = _library(home, db, name, version).bare_scorer(encoder_key)
    if isinstance(found, str):
        raise _Missing(found)  # not cached: a later 'whyclip eval' may embed what is missing
    return found


class _Missing(Exception):
    pass


def name_split(s: Settings, lib: Library, model: str):
    """The bare-descriptor scorer for the name/description split, or the note why there is none."""
    try:
        return _name_split(s.home, s.db, lib.info.name, lib.info.version, _encoder(model).cache_key)
    except _Missing as exc:
        return str(exc)


def calibration(s: Settings, lib: Library, aggregate: str):
    """The version's newest calibration for ``aggregate``, or None (one query, not cached)."""
    return latest_calibration(_store(s.home, s.db).engine, lib.info.id, aggregate)


@st.cache_data(show_spinner=False, max_entries=512)
def count_rows(home: str | None, db: str | None, kind: str, name: str, version: int, search: str = "") -> int:
    """Row counts for the library page; a library version never changes, so they cache."""
    store = _store(home, db)
    info = store.library(name, version)
    if kind == "descriptors":
        return browse.count_descriptor_rows(store.engine, info, search)
    if kind == "classes":
        return browse.count_classes(store.engine, info, search)
    return browse.count_shared_descriptors(store.engine, info)


def encoder(model: str):
    """The CLIP encoder for ``model``, loaded once per server (cached)."""
    return _encoder(model)


def clear_store_caches() -> None:
    """After a write (a new library version), so the pages list what the store now has."""
    _store.clear()
    count_rows.clear()


def store_or_stop(s: Settings) -> Store:
    """The store, or an ``st.info`` that says how to make one, and stop."""
    try:
        return _store(s.home, s.db)
    except WhyclipError as exc:
        st.info(f"{exc}. Try `whyclip demo` for a first library.")
        st.stop()


def pick_library(store: Store, s: Settings, key: str) -> LibraryInfo:
    """A library chosen in the sidebar (the configured one first), or stop with advice."""
    infos = store.libraries()
    if not infos:
        st.info("No libraries yet: run `whyclip demo`, or `whyclip ingest FILE --library NAME`, then reload.")
        st.stop()
    names = [i.name for i in infos]
    newest = max(range(len(infos)), key=lambda i: (infos[i].created_at, infos[i].id))  # the library just made
    default = names.index(s.library) if s.library in names else newest
    name = st.sidebar.selectbox("Library", names, index=default, key=key)
    return infos[names.index(name)]


def library(s: Settings, info: LibraryInfo) -> Library:
    try:
        return _library(s.home, s.db, info.name, info.version)
    except WhyclipError as exc:
        st.error(str(exc))
        st.stop()


def encoder_or_stop(s: Settings, lib: Library) -> str:
    """Load (once) the model for ``lib``; returns its cache key. Stops with the reason on failure."""
    model = s.model or lib.info.encoder_name
    try:
        enc = _encoder(model)
        check_library_encoder(lib, enc)  # read only: an old id of this model is accepted, not rewritten
    except WhyclipError as exc:
        st.error(str(exc))
        st.stop()
    return model


def random_weight_banner(model: str) -> None:
    """A warning banner when ``model`` is a random-weight test model (the check behind the
    CLI's warning): its predictions and explanations mean nothing."""
    if is_test_model(model):
        st.warning(f"The model `{model}` {RANDOM_WEIGHTS}.", icon=":material/warning:")


@dataclass(frozen=True)
class Seen:
    """An image as the CLIP image tower saw it: its pixel values (1, 3, H, W), the picture
    (``view``, (H, W, 3) uint8) and its decomposition, whose fp32 forward pass also gives
    the image's vector (None: the tower cannot be decomposed, and maps are by occlusion)."""

    pixels: Any
    view: np.ndarray
    decomposition: Any

    @property
    def vector(self) -> np.ndarray | None:
        """The unit image vector (1, dim) from the decomposition's pass, as the core's
        explanations with maps take it, so that the S listed is the S each map splits."""
        if self.decomposition is None:
            return None
        raw = self.decomposition.embedding
        return (raw / np.linalg.norm(raw)).astype(np.float32)[None, :]


@st.cache_data(show_spinner=False, max_entries=64)
def _seen(model: str, digest: str, _data: bytes, _name: str) -> Seen | None:
    encoder = _encoder(model)
    if not hasattr(encoder, "map_model"):
        return None
    _encoding.fresh = True  # runs on a cache miss only
    tower = encoder.map_model()
    pixels = tower.pixels(ingest.images.read_image_bytes(_name, _data))
    # dense as well: one pass serves the exact and the dense maps, ticked or not
    dec = decompose_image(tower, pixels, MapOptions(dense=True)) if tower.reason is None else None
    return Seen(pixels, tower.view(pixels), dec)


def seen_image(model: str, name: str, data: bytes) -> tuple[Seen | None, bool]:
    """The image as ``model``'s CLIP tower saw it (cached by content), and whether this run
    encoded it; None for an encoder without an image tower (no maps). Raises InputError."""
    _encoding.fresh = False
    seen = _seen(model, hashlib.sha256(data).hexdigest(), data, name)
    return seen, _encoding.fresh


_mapping = threading.local()  # did this run make the maps?


@st.cache_data(show_spinner="Mapping where each descriptor is seen ...", max_entries=64)
def _image_maps(
    model: str, digest: str, explained: tuple, check: str | None, dense: bool, _seen: Seen, _explainer, _exp
) -> ImageMaps:
    _mapping.fresh = True  # runs on a cache miss only
    plan = _explainer.plan
    return image_maps(
        _encoder(model).map_model(),
        _seen.pixels,
        _explainer.library,
        _exp,
        MapOptions(check=check, dense=dense),
        plan.options.descriptors or plan.limits.max_descriptors_listed,
        decomposition=_seen.decomposition,
    )


def maps_of(
    model: str, seen: Seen, data: bytes, explainer, exp: Explanation, explained: tuple, check: str | None, dense: bool
) -> tuple[ImageMaps, bool]:
    """The maps of ``exp``'s descriptors on the image ``data`` (the core's
    :func:`~whyclip.ingest.services.maps.image_maps`, from the image's cached decomposition),
    and whether this run made them (False: from the cache). Cached by the image's content, the
    model, ``explained`` (what decides the mapped descriptors: the library version, the classes
    shown and the contrast) and the map options."""
    _mapping.fresh = False
    maps = _image_maps(model, hashlib.sha256(data).hexdigest(), explained, check, dense, seen, explainer, exp)
    return maps, _mapping.fresh


def image_vector(model: str, name: str, data: bytes) -> tuple[np.ndarray, bool]:
    """The unit vector of an uploaded image (cached by content), and whether this run encoded
    it (False: it came from the cache); raises InputError."""
    _encoding.fresh = False
    vector = _image_vector(model, hashlib.sha256(data).hexdigest(), data, name)
    return vector, _encoding.fresh


def samples_for(s: Settings, class_names: list[str]) -> tuple[dict[str, Path], list[str]]:
    """The pickable images for a library: the drawn samples of its classes (a sample of
    another class would only be misclassified) and every image of WHYCLIP_UI_IMAGES; and the
    classes of the samples left out."""
    classes = {n.casefold() for n in class_names}
    shown, left_out = {}, []
    for label, path in sample_images(s).items():
        depicts = SAMPLE_CLASSES.get(path.name) if label.startswith("sample: ") else None
        if depicts is not None and depicts.casefold() not in classes:
            left_out.append(depicts)
        else:
            shown[label] = path
    return shown, left_out


def sample_images(s: Settings) -> dict[str, Path]:
    """The drawn demo samples plus, with WHYCLIP_UI_IMAGES, the images in that folder."""
    home = _store(s.home, s.db).home  # the data directory, where the demo draws the same samples
    out = {f"sample: {p.stem.replace('_', ' ')}": p for p in _samples(str(home))}
    listing = _folder_images(s.images) if s.images else None
    if listing is not None and not isinstance(listing, str):
        out.update({f"folder: {p.relative_to(listing.root).as_posix()}": p for p in listing.files})
    return out


def folder_images_note(s: Settings) -> str | None:
    """Why WHYCLIP_UI_IMAGES gives no images to pick (none under it, or too many), or None."""
    if not s.images:
        return None
    listing = _folder_images(s.images)
    if isinstance(listing, str):
        return listing
    return None if listing.files else listing.summary


@st.cache_data(show_spinner=False, max_entries=4, ttl=60)
def _folder_images(folder: str):
    """The images under the folder (the one rule: :func:`whyclip.ingest.images.list_images`),
    or a line saying why there are none; listed again after a minute."""
    try:
        return ingest.images.list_images(folder)
    except WhyclipError as exc:
        return str(exc)


@st.cache_resource(show_spinner=False)
def _samples(home: str) -> list[Path]:
    """The drawn samples, in the data directory's ``demo-images/`` (where ``whyclip demo``
    draws the same ones): nothing is written outside ``--home``."""
    return draw_samples(Path(home) / "demo-images")


@st.cache_data(show_spinner="Auditing the run ...", max_entries=16)
def audit(
    home: str | None,
    db: str | None,
    library: str,
    version: int,
    run_id: int,
    aggregate: str,
    delete_k: int,
    near: float,
    flat: float,
    min_n: int = 10,
    calibration_id: int | None = None,
) -> dict:
    """``whyclip audit``'s data for a stored run (runs never change, so it caches; a new
    calibration of the version has a new ``calibration_id``, which is part of the key)."""
    store = _store(home, db)
    (info,) = [r for r in list_runs(store.engine, library) if r.id == run_id]
    settings = AuditSettings(aggregate=aggregate, delete_k=delete_k, near_threshold=near, flat_ratio=flat, min_n=min_n)
    lib = _library(home, db, library, version)
    return make_audit(
        load_run(store.engine, info), lib, settings, latest_calibration(store.engine, lib.info.id, aggregate)
    )


def calibration_id(home: str | None, db: str | None, library_id: int, aggregate: str) -> int | None:
    """The id of the version's newest calibration for ``aggregate`` (not cached: one query)."""
    cal = latest_calibration(_store(home, db).engine, library_id, aggregate)
    return None if cal is None else cal.id


@st.cache_data(show_spinner="Rendering the report ...", max_entries=4)
def audit_html(key: tuple) -> str:
    """The HTML report of ``audit(*key)``, cached by the audit's own arguments: hashing the
    audit's dict on every rerun took longer than the rest of the page (160 ms on a 2,000-image run)."""
    return to_html(audit(*key))


@st.cache_resource(show_spinner="Scoring the run for what-if edits ...", max_entries=4)
def whatif_session(home: str | None, db: str | None, library: str, version: int, run_id: int, aggregate: str):
    """A run scored once by its library version (:class:`~whyclip.store.analysis.whatif.WhatIf`):
    each toggle then rescores only the edited class. Never mutated."""
    store = _store(home, db)
    (info,) = [r for r in list_runs(store.engine, library) if r.id == run_id]
    return WhatIf(load_run(store.engine, info), _library(home, db, library, version), aggregate)


@st.cache_data(show_spinner="Embedding the new descriptor ...", max_entries=256)
def prompt_vectors(
    home: str | None, db: str | None, model: str, library: str, version: int, prompts: tuple[str, ...]
) -> dict:
    """``{prompt: (unit vector, norm)}`` of a what-if's added prompts, through the embedding
    cache (only new prompts are embedded) and the same service as ``whyclip whatif``."""
    lib = _library(home, db, library, version)
    return added_vectors(_store(home, db), lib, _encoder(model), prompts)[0]


def save_edit(home: str | None, db: str | None, model: str, lib: Library, edit, note: str):
    """Publish ``edit`` of ``lib`` as the next version (the store's atomic publish), then
    forget the cached store listings so every page sees it."""
    store = Store.open(home, db, create=True)
    try:
        vectors, truncated = (
            ({}, {}) if not edit.new_prompts else added_vectors(store, lib, _encoder(model), edit.new_prompts)[:2]
        )
        return publish(store, lib, edit, vectors, truncated, note)
    finally:
        store.engine.dispose()
        clear_store_caches()
