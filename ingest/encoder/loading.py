"""Finding and loading a CLIP model: a local folder (plain transformers, or a
sentence-transformers folder around one), or a name from the local hub cache, asking the hub
only when the model is not cached and the hub answers; every failure is one line saying what
to pass instead."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from whyclip.store import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "clip-ViT-B-32"


def model_name(model: str | None) -> str:
    """The name an encoder is known by: the default model, a hub name as given, or a local
    folder's absolute path (so two spellings of one folder load it once)."""
    model = model or DEFAULT_MODEL
    return str(Path(model).expanduser().resolve()) if looks_like_path(model) else model


def looks_like_path(model: str) -> bool:
    return model.startswith((".", "~", "/")) or os.sep in model or Path(model).exists()


TEST_MODEL_MARKER = "whyclip_test_model.json"  # written by `whyclip make-test-model`
RANDOM_WEIGHTS = "is a random-weight test model: fine for plumbing and speed checks, its explanations mean nothing"


def is_test_model(model: str | None) -> bool:
    """Whether ``model`` is a random-weight test folder written by ``whyclip make-test-model``
    (the one check behind the CLI's warning and the dashboard's banner)."""
    return model is not None and looks_like_path(model) and (Path(model_name(model)) / TEST_MODEL_MARKER).is_file()


def clip_folder_of(model: str) -> Path | None:
    """The transformers CLIP folder ``model`` names, loaded without sentence-transformers:
    a local CLIP folder (plain, or a sentence-transformers folder around one CLIP module),
    or a hub model already in the local cache (the default ``clip-ViT-B-32`` included).
    None: load it through sentence-transformers."""
    from whyclip.ingest.encoder.clipmodel import clip_folder

    if looks_like_path(model):
        path = Path(model).expanduser()
        return clip_folder(path) if path.is_dir() else None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover
        return None
    for repo in [model] if "/" in model else [f"sentence-transformers/{model}", model]:
        try:
            folder = Path(snapshot_download(repo, local_files_only=True))
        except Exception:
            continue
        found = clip_folder(folder)
        if found is not None:
            return found
    return None


def load_sentence_transformer(model: str, device: str | None):
    as_path = Path(model).expanduser()
    if looks_like_path(model):
        if not as_path.is_dir():
            raise ModelLoadError(f"model folder {as_path} does not exist: pass --model PATH to a CLIP folder")
        if not (as_path / "config.json").is_file() and not (as_path / "modules.json").is_file():
            raise ModelLoadError(
                f"{as_path} is not a model folder (no config.json or modules.json): "
                "pass --model PATH to a CLIP folder saved with save_pretrained"
            )
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ModelLoadError(f"sentence-transformers is not importable ({exc}): reinstall whyclip") from None
    if looks_like_path(model):
        try:
            st = SentenceTransformer(str(as_path), device=device)
        except Exception as exc:  # a corrupt folder, not a CLIP model
            raise ModelLoadError(f"cannot load the CLIP model in {as_path}: {first_line(exc)}") from None
    else:
        st = load_by_name(SentenceTransformer, model, device)
    module = st[0]
    clip = getattr(module, "auto_model", None) or getattr(module, "model", None)
    if clip is None or not hasattr(clip, "get_text_features") or not hasattr(clip, "logit_scale"):
        raise ModelLoadError(
            f"{model!r} is not a CLIP model (no text/image towers and logit scale): pass --model PATH to a CLIP folder"
        )
    return st


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the model hub, so an offline machine fails in seconds
    instead of retrying every file for a minute."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_by_name(factory, model: str, device: str | None):
    """The local cache first; the hub only when the model is not cached and the hub answers."""
    try:
        return factory(model, device=device, local_files_only=True)
    except Exception:
        log.info("%s is not in the local cache", model)
    offline_hint = (
        "pass --model PATH to a local CLIP folder ('whyclip make-test-model DIR' writes a "
        "random-weight one for plumbing checks), or connect to the internet once to download it"
    )
    if not hub_reachable():
        raise ModelLoadError(
            f"cannot load CLIP model {model!r}: it is not in the local cache and the model hub cannot be "
            f"reached (no network?): {offline_hint}"
        )
    try:
        return factory(model, device=device)
    except Exception as exc:
        raise ModelLoadError(f"cannot load CLIP model {model!r} ({first_line(exc)}): {offline_hint}") from None
