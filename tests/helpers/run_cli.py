"""Run the whyclip command line in a fresh process with a test hook, for tests that need
several real processes at once: ``python -m tests.helpers.run_cli MODE whyclip-args...`` from
the repository root (see :data:`tests.helpers.cli.FRESH_FAKE`).

- ``fake``: every model loads as the deterministic fake encoder of :mod:`tests.helpers.fakes` (fast, exact).
- ``fallback``: real models load, but every lower-precision check fails (its floors are set
  above 1), so a bf16 encoder falls back to fp32 on its first texts, mid-ingest.
"""

from __future__ import annotations

import sys

CONCEPTS = ["green", "stripes", "wings", "fur"]


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "fake":
        from tests.helpers.fakes import FakeEncoder
        from whyclip import ingest

        ingest.load_encoder = lambda *a, **k: FakeEncoder(CONCEPTS)
    elif mode == "fallback":
        from whyclip.ingest.encoder import clip_encoder

        clip_encoder.MIN_COSINE = clip_encoder.PREFIX_MIN_COSINE = 1.5  # no cosine reaches it
    else:
        raise SystemExit(f"unknown mode {mode!r}: use fake or fallback")
    from whyclip.ui.cli.main import cli

    cli(args=args, prog_name="whyclip")


if __name__ == "__main__":
    main()
