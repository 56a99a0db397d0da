"""Which CLIP model re-ingests an exported library: the one that built it.

An export's sidecar (``FILE.meta.json``, :func:`whyclip.store.export_library`) records the
encoder that made the exported version: its content id (``encoder_id``) and the name it was
loaded by (``encoder_name``: a model name, or a local folder's path). Without ``--model``,
``whyclip ingest FILE`` loads that model, so the new version's vectors are the exported
version's: the folder the sidecar names when it exists, else a folder of the same encoder
id that a library in the store was built from (the folder was moved), else the model name.
A folder that is gone and known nowhere is one line naming it and ``--model``. An explicit
``--model`` wins; when its encoder id is not the sidecar's, that is said in one line.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from whyclip.ingest.encoder.loading import looks_like_path
from whyclip.store import ModelLoadError, Store, WhyclipError


def sidecar_model(meta: dict[str, Any], sidecar: str | Path, known: Iterable[str] = ()) -> tuple[str, str]:
    """``(model to load, the line saying so)`` for an export's sidecar ``meta`` (read from
    ``sidecar``); ``known``: local folders the store knows for the sidecar's encoder id
    (:func:`known_folders`). Raises :class:`ModelLoadError` when the sidecar names a folder
    that is gone and no known folder has its encoder id."""
    name, encoder_id = str(meta.get("encoder_name") or ""), str(meta.get("encoder_id") or "")
    said = f"using model {name!r} from {sidecar} (encoder id {encoder_id})"
    if name and not looks_like_path(name):
        return name, said  # a model name: loaded from the local cache or the hub
    if name and Path(name).expanduser().is_dir():
        return name, said
    for folder in known:
        return folder, (
            f"using model {folder!r}: the folder {sidecar} names ({name!r}) is gone, and a library in this store "
            f"was built from that one with the same encoder id ({encoder_id})"
        )
    raise ModelLoadError(
        f"{sidecar} names model {name!r} (encoder id {encoder_id}), a folder that does not exist: pass --model "
        "with the model that built the export (a local folder or a model name)"
    )


def known_folders(store: Store, encoder_id: str) -> list[str]:
    """Local model folders that exist and built a library version of ``encoder_id`` in ``store``."""
    try:
        infos = store.libraries(every_version=True)
    except WhyclipError:
        return []
    names = dict.fromkeys(i.encoder_name for i in infos if i.encoder_id == encoder_id)
    return [n for n in names if looks_like_path(n) and Path(n).expanduser().is_dir()]


def other_model_note(encoder, meta: dict[str, Any], sidecar: str | Path) -> str | None:
    """The line saying that ``--model`` is not the model the sidecar names (by encoder id), or None."""
    encoder_id = meta.get("encoder_id")
    if not encoder_id or encoder.info.id == encoder_id:
        return None
    return (
        f"note: --model {encoder.info.name} (encoder id {encoder.info.id}) is not the model {sidecar} names "
        f"({meta.get('encoder_name')!r}, encoder id {encoder_id}): the vectors will differ from the exported version's"
    )
