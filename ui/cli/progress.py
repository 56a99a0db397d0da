"""Progress bars for the command line: tqdm on stderr, driven by ``progress(done, total)``."""

from __future__ import annotations

import sys
from contextlib import contextmanager


@contextmanager
def progress_bar(desc: str, unit: str = "it"):
    """Yield a ``callback(done, total)`` that draws a tqdm bar on stderr."""
    from tqdm import tqdm  # drawn when there is work, not imported for --help

    bar: tqdm | None = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
        if total != bar.total:  # work found on the way (e.g. empty answers asked again)
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
