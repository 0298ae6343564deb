"""Dynamic batching: requests that arrive together share one forward pass.

Each request is preprocessed on its own (so a bad one fails alone), queued, and the worker joins what is queued,
up to `max_batch_size` items or until `max_wait_ms` after the first, into one batch. Every example is computed
independently of the others in its batch (fixed-length padding, padding masked), so batching changes no answer.
With max_batch_size 1 it is off: one request per forward pass, in arrival order.

The worker never dies of a request: whatever a batch raises fails only that batch's requests (a batch of several
is run again one request at a time, so a bad request fails alone), and the next batch runs. The server reports
not ready while the worker is not running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

log = logging.getLogger("modelyard.serving")


class BatcherStopped(RuntimeError):
    """The batcher's worker is not running: the request cannot be answered here."""


@dataclass
class _Item:
    x: Any
    n: int
    future: asyncio.Future


def concat(parts: list) -> Any:
    """Join preprocessed inputs: tensors along the batch dimension, or lists (texts for estimators)."""
    if isinstance(parts[0], torch.Tensor):
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    return [v for p in parts for v in p]


class Batcher:
    """Joins queued requests into batches for `forward`, in one task that survives whatever a batch raises."""

    def __init__(self, forward: Callable[[Any], np.ndarray], *, max_batch_size: int, max_wait_ms: float,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.forward, self.max_batch_size, self.max_wait = forward, max_batch_size, max_wait_ms / 1000
        self.on_batch = on_batch or (lambda n: None)
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelyard-forward")
        self.task: asyncio.Task | None = None
        self._held: _Item | None = None

    @property
    def depth(self) -> int:
        return self.queue.qsize() + (self._held is not None)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.executor.shutdown(wait=False)

    async def submit(self, x: Any, n: int) -> tuple[np.ndarray, float]:
        """Probabilities (n, C) for this request's items, and the milliseconds of compute it shared.

        Raises:
            ValueError: `n` is not at least 1 (the server refuses empty requests before they get here).
            BatcherStopped: the worker is not running (the server answers 503 and reports not ready).
        """
        if n < 1:
            raise ValueError(f"a request needs at least one item, got {n}")
        if not self.running:
            raise BatcherStopped("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Item(x, n, future))
        return await future

    async def _next(self, timeout: float | None) -> _Item | None:
        if self._held is not None:
            item, self._held = self._held, None
            return item
        if timeout is None:
            return await self.queue.get()
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _run(self) -> None:
        while True:
            items: list[_Item] = []
            try:
                await self._collect(items)
                await self._compute(items)
            except Exception as exc:  # noqa: BLE001  (whatever one batch raises, the next one runs)
                log.exception("a batch of %d request(s) failed; the batcher goes on", len(items))
                _fail(items, exc)

    async def _collect(self, items: list[_Item]) -> None:
        """Fill `items` with what is queued: up to max_batch_size items, or until max_wait after the first."""
        loop = asyncio.get_running_loop()
        first = await self._next(None)
        items.append(first)
        size = first.n
        deadline = loop.time() + self.max_wait
        while size < self.max_batch_size:
            left = deadline - loop.time()
            if left <= 0 and self.queue.empty():
                break
            item = await self._next(max(left, 0.0))
            if item is None:
                break
            if size + item.n > self.max_batch_size:
                self._held = item  # starts the next batch
                break
            items.append(item)
            size += item.n

    async def _compute(self, items: list[_Item]) -> None:
        try:
            prob, ms = await self._forward(items)
        except Exception:  # noqa: BLE001
            if len(items) == 1:
                raise
            # One bad request must not fail the others it was batched with: run each alone.
            for item in items:
                try:
                    prob, ms = await self._forward([item])
                except Exception as exc:  # noqa: BLE001
                    log.exception("a request failed in the model's forward pass")
                    _fail([item], exc)
                else:
                    _answer([item], prob, ms)
            return
        _answer(items, prob, ms)

    async def _forward(self, items: list[_Item]) -> tuple[np.ndarray, float]:
        size = sum(i.n for i in items)
        t0 = time.perf_counter()
        prob = await asyncio.get_running_loop().run_in_executor(self.executor, self.forward,
                                                                concat([i.x for i in items]))
        if len(prob) != size:
            raise RuntimeError(f"the model answered {len(prob)} rows for {size} items")
        self.on_batch(size)
        return prob, (time.perf_counter() - t0) * 1000


def _answer(items: list[_Item], prob: np.ndarray, ms: float) -> None:
    size, start = sum(i.n for i in items), 0
    for i in items:
        if not i.future.done():  # a client that went away cancelled its future
            i.future.set_result((prob[start:start + i.n], ms * i.n / size))
        start += i.n


def _fail(items: list[_Item], exc: BaseException) -> None:
    for i in items:
        if not i.future.done():
            i.future.set_exception(exc)
