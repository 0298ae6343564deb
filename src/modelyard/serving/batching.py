"""Dynamic batching: requests that arrive together share one forward pass.

Each request is preprocessed on its own (so a bad one fails alone), queued, and the worker joins what is queued,
up to `max_batch_size` items or until `max_wait_ms` after the first, into one batch. Every example is computed
independently of the others in its batch (fixed-length padding, padding masked), so batching changes no answer.
With max_batch_size 1 it is off: one request per forward pass, in arrival order.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch


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

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.executor.shutdown(wait=False)

    async def submit(self, x: Any, n: int) -> tuple[np.ndarray, float]:
        """Probabilities (n, C) for this request's items, and the milliseconds of compute it shared."""
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
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            items, size = [first], first.n
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
            await self._compute(loop, items, size)

    async def _compute(self, loop, items: list[_Item], size: int) -> None:
        t0 = time.perf_counter()
        try:
            prob = await loop.run_in_executor(self.executor, self.forward, concat([i.x for i in items]))
        except Exception as exc:  # surfaces in every request of the batch, as a 500 with the reason
            for i in items:
                if not i.future.done():
                    i.future.set_exception(exc)
            return
        ms = (time.perf_counter() - t0) * 1000
        self.on_batch(size)
        start = 0
        for i in items:
            if not i.future.done():  # a client that went away cancelled its future
                i.future.set_result((prob[start:start + i.n], ms * i.n / size))
            start += i.n
