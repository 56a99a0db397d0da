"""The numeric precision policy: which precision a device runs (``auto``: fp16 on a GPU, bf16
on a CPU that computes it natively, else fp32), the torch dtype of each, and what besides the
weights decides a precision check's rounding (the platform signature a stored verdict is
keyed by). The checks themselves run in :class:`~whyclip.ingest.encoder.clip_encoder.ClipEncoder`."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from whyclip.store import ModelLoadError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 CPU flags of native bf16 arithmetic (Linux /proc/cpuinfo)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's own answer). torch has no public call
    for it: oneDNN's check is an internal op, so it is asked here alone, and where a torch
    build lacks it the CPU's flags answer instead."""
    import torch  # not at import: torch takes seconds to load, and only a loaded model needs it

    if not torch.backends.mkldnn.is_available():
        return False
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if check is not None:
        try:
            return bool(check())
        except RuntimeError:
            pass
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return any(flag in flags for flag in _BF16_FLAGS)


def platform_signature(device: str, backend: str) -> str:
    """What decides a precision check's rounding besides the weights: torch's and
    transformers' versions, the backend and the device (a CPU's instruction set and native
    bf16, or the GPU's name and compute capability)."""
    from importlib.metadata import version

    import torch

    if device.startswith("cuda"):
        idx = torch.device(device).index or 0
        where = f"cuda {torch.cuda.get_device_name(idx)} sm{''.join(map(str, torch.cuda.get_device_capability(idx)))}"
    else:
        native = cpu_has_native_bf16()
        where = f"{device} {torch.backends.cpu.get_cpu_capability()}{' bf16' if native else ''}"
    return f"torch {torch.__version__}; transformers {version('transformers')}; {backend}; {where}"


def torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: fp16 on a GPU, bf16 on a CPU that computes it natively, else fp32."""
    if precision not in PRECISIONS:
        raise ModelLoadError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    cpu_bf16 = device == "cpu" and cpu_has_native_bf16()
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "bf16" if cpu_bf16 else "fp32"
    if precision == "bf16" and device == "cpu" and not cpu_bf16:
        log.warning("this CPU has no native bf16: using fp32")
        return "fp32"
    if precision == "fp16" and device == "cpu":
        log.warning("fp16 is slow on CPUs: using fp32 (bf16 is the fast choice where the CPU supports it)")
        return "fp32"
    return precision
