"""Dynamic micro-batching of image encodes: concurrent requests share one encoder call.

Requests put their decoded images on a bounded queue and await a future; one worker thread
takes the first waiting request, waits up to ``wait_ms`` for more to arrive, encodes up to
``max_batch`` images in one call and hands each request its rows. The event loop never
blocks: a full queue refuses at once (:class:`QueueFull`, answered 503 with Retry-After)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More images are waiting than the queue holds."""


@dataclass
class _Item:
    images: list
    future: Future = field(default_factory=Future)


class MicroBatcher:
    def __init__(self, encode, max_batch: int = 32, wait_ms: float = 5.0, max_queued: int = 256):
        """``encode(images) -> (unit vectors, norms)``, called from the worker thread only."""
        self.encode = encode
        self.max_batch = max(1, max_batch)
        self.wait_s = max(0.0, wait_ms) / 1000
        self.max_queued = max(1, max_queued)
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # recent encoder calls, for /readyz and benchmarks
        self._items: deque[_Item] = deque()
        self._queued = 0  # images waiting
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="whyclip-image-batcher", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._queued

    def submit(self, images: list) -> Future:
        """Queue one request's images; its future gets their (n, dim) unit vectors."""
        item = _Item(list(images))
        with self._cond:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if self._queued + len(item.images) > self.max_queued and self._queued:
                raise QueueFull(f"{self._queued} images are waiting to be encoded")
            self._items.append(item)
            self._queued += len(item.images)
            self._cond.notify()
        return item.future

    async def embed(self, images: list) -> np.ndarray:
        return await asyncio.wrap_future(self.submit(images))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _take(self) -> list[_Item] | None:
        """Block for the first request, then gather more until the batch is full or the wait is over."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if self._closed and not self._items:
                return None
            batch = [self._items.popleft()]
            size = len(batch[0].images)
            deadline = time.monotonic() + self.wait_s
            while size < self.max_batch:
                if not self._items:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._closed:
                        break
                    self._cond.wait(left)
                    continue
                if size + len(self._items[0].images) > self.max_batch:
                    break
                batch.append(self._items.popleft())
                size += len(batch[-1].images)
            self._queued -= size
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            batch = [
                item for item in batch if item.future.set_running_or_notify_cancel()
            ]  # a timed-out request: skipped
            if not batch:
                continue
            images = [im for item in batch for im in item.images]
            try:
                vectors, _ = self.encode(images)
            except BaseException as exc:  # every waiting request learns of it; the worker lives on
                log.exception("image encode failed")
                for item in batch:
                    item.future.set_exception(exc)
                continue
            self.batch_sizes.append(len(images))
            row = 0
            for item in batch:
                item.future.set_result(vectors[row : row + len(item.images)])
                row += len(item.images)
