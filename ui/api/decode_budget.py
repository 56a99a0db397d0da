"""One budget of decoded pixels for the whole process: every request's images are decoded
under it, one image at a time, and each is shrunk to the image tower's input before its
pixels are given back. However many requests arrive, the full-size pictures held at once
stay within the budget; a request that cannot get its share in time is told the server is
busy (503) rather than let memory grow."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager


class Busy(Exception):
    """The budget stayed spent for longer than a request may wait."""


class PixelBudget:
    def __init__(self, pixels: int):
        self.total = max(1, pixels)
        self._free = self.total
        self._cond = threading.Condition()

    @property
    def in_use(self) -> int:
        return self.total - self._free

    @contextmanager
    def hold(self, pixels: int, timeout_s: float):
        """Hold ``pixels`` (at most the whole budget: one image may always decode alone)
        while the block runs; :class:`Busy` after ``timeout_s`` of waiting."""
        need = min(max(0, pixels), self.total)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._free < need:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Busy(f"{self.in_use:,} of {self.total:,} decode pixels in use")
                self._cond.wait(left)
            self._free -= need
        try:
            yield
        finally:
            with self._cond:
                self._free += need
                self._cond.notify_all()
