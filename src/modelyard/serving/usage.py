"""Usage per API key (what a company bills): counted in memory, added to the registry every second.

Counts are never dropped: a flush that fails (a locked or unreachable database) puts its counts back, is retried
with a growing pause (1, 2, 4, ... up to 15 s), logs a warning and is counted in
`modelyard_usage_flush_failures_total`. At shutdown the last counts are retried a few times, and if the registry
still cannot take them they are logged, key by key, so nothing is lost silently.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Callable

log = logging.getLogger("modelyard.serving")

Counts = tuple[int, int, float, int]  # requests, predictions, compute milliseconds, inputs explained


class UsageMeter:
    def __init__(self, db_url: str | None, *, on_failure: Callable[[], None] = lambda: None,
                 interval_s: float = 1.0, max_pause_s: float = 15.0) -> None:
        self.db_url, self.on_failure = db_url, on_failure
        self.interval_s, self.max_pause_s = interval_s, max_pause_s
        self.pending: dict[int, Counts] = {}
        self.lock = threading.Lock()
        # One flush at a time, database write included: the shutdown flush must wait for one the cancelled flusher
        # left running in its thread, and see the counts that one puts back if its write fails.
        self.flushing = threading.Lock()

    def add(self, key_id: int, predictions: int, ms: float, requests: int = 1, explanations: int = 0) -> None:
        """Count a request: its predictions, or (an explanation) the inputs it explained, billed apart."""
        with self.lock:
            self._merge({key_id: (requests, predictions, ms, explanations)})

    def _merge(self, counts: dict[int, Counts]) -> None:
        for key_id, (r, p, m, e) in counts.items():
            r0, p0, m0, e0 = self.pending.get(key_id, (0, 0, 0.0, 0))
            self.pending[key_id] = (r0 + r, p0 + p, m0 + m, e0 + e)

    def flush(self) -> None:
        """Add the pending counts to the registry in one transaction; on failure they stay pending and it raises."""
        from modelyard.store.keys import add_usage_many

        with self.flushing:
            with self.lock:
                taken, self.pending = self.pending, {}
            if not taken:
                return
            try:
                add_usage_many(taken, url=self.db_url)
            except BaseException:
                with self.lock:
                    self._merge(taken)
                raise

    async def run(self) -> None:
        """Flush every `interval_s` until cancelled; survives every failure of the registry."""
        failures = 0
        while True:
            pause = self.interval_s if not failures else min(self.interval_s * 2 ** (failures - 1), self.max_pause_s)
            await asyncio.sleep(pause)
            try:
                await asyncio.to_thread(self.flush)
            except Exception as exc:  # noqa: BLE001  (a locked or unreachable registry: retry, keep the counts)
                failures += 1
                self.on_failure()
                log.warning("usage not yet saved (%s: %s); %d key(s) pending, retrying in %.0f s",
                            exc.__class__.__name__, str(exc).splitlines()[0][:200] if str(exc) else "",
                            len(self.pending), min(self.interval_s * 2 ** (failures - 1), self.max_pause_s))
            else:
                failures = 0

    async def close(self, attempts: int = 3) -> None:
        """The last flush, at shutdown: retried; what still cannot be saved is logged, not dropped silently."""
        for attempt in range(attempts):
            try:
                await asyncio.to_thread(self.flush)
                return
            except Exception as exc:  # noqa: BLE001
                self.on_failure()
                log.warning("usage not saved at shutdown (%s), attempt %d of %d", exc.__class__.__name__,
                            attempt + 1, attempts)
                await asyncio.sleep(min(2 ** attempt, self.max_pause_s))
        for key_id, (r, p, m, e) in self.pending.items():
            log.error("usage NOT saved: key id %d: %d requests, %d predictions, %d inputs explained, %.1f compute "
                      "ms; add it with modelyard.store.keys.add_usage", key_id, r, p, e, m)
