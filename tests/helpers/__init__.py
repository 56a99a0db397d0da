"""Builders the test modules share: no test module imports another.

- :mod:`tests.helpers.fakes`: the deterministic fake encoder and planted images;
- :mod:`tests.helpers.planted`: the planted eval world (library, images, the ``world`` fixture);
- :mod:`tests.helpers.service`: the HTTP service on the frogs library (``client``, ``home``);
- :mod:`tests.helpers.cli`: the command line in process, or in a fresh process where that is the point;
- :mod:`tests.helpers.pg`: a throwaway PostgreSQL cluster;
- :mod:`tests.helpers.chat_server`: a chat-completions server on loopback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED_DESCRIPTORS = ROOT.parent / "shared" / "data" / "descriptors"


def shared_file(name: str) -> Path:
    """One of the paper's descriptor files beside a development checkout, or a skip saying why not."""
    path = SHARED_DESCRIPTORS / name
    if not path.is_file():
        pytest.skip(
            f"{path} is absent: the paper's descriptor files live in ../shared beside a development "
            "checkout, not in a plain clone"
        )
    return path
