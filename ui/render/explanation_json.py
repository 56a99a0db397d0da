"""The JSON an explanation is given as, the same from the command line and the service:
``Explanation.to_dict()`` plus what produced it (whyclip's version, the encoder id and the
numeric precision)."""

from __future__ import annotations


def whyclip_version() -> str:
    """The installed whyclip's version (``unknown`` when run from a tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version  # 40 ms: not on the path of --help

    try:
        return version("whyclip")
    except PackageNotFoundError:
        return "unknown"


def explanation_json(exp, encoder) -> dict:
    """One image's explanation as ``whyclip explain --json`` prints it."""
    return {
        **exp.to_dict(),
        "whyclip_version": whyclip_version(),
        "encoder_id": encoder.info.id,
        "precision": getattr(encoder, "precision", "fp32"),
    }
