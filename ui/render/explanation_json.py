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
        "precision": precision_of(exp, encoder),
    }


def precision_of(exp, encoder) -> str:
    """The numeric precision the answer was computed in: the encoder's, except that an image
    explained with exact maps was encoded by the maps' own fp32 pass."""
    precision = getattr(encoder, "precision", "fp32")
    if exp.maps is None or exp.maps.method != "decomposition":
        return precision
    text = getattr(encoder, "precisions", {}).get("text", "fp32")
    return "fp32" if text == "fp32" else f"text {text}, images fp32"
