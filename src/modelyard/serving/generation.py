"""A language model behind one lock: its key-value cache is not shared, so one generation runs at a time.

Whatever happens to the client, the lock is released: a streamed generation whose client disconnects is cancelled
at the next token (the thread finishes the token it is computing, then the generation is closed).
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Callable, Iterator

import anyio

from modelyard.serving.protocol import BadRequest

_END = object()


class ExclusiveModel:
    """Runs a language model's calls one at a time, off the event loop."""

    def __init__(self, model) -> None:
        self.model = model
        self.lock = asyncio.Lock()

    async def check_prompt(self, prompt: str) -> None:
        """Refuse a prompt the model cannot start from, before any answer is streamed."""
        ids = await asyncio.to_thread(self.model.preprocessor.encode, prompt)
        if not ids:
            raise BadRequest("the prompt encodes to no tokens; give some text")

    async def stream(self, **kwargs) -> AsyncIterator[str]:
        """The continuation piece by piece (`LanguageModel.generate`'s arguments). Use it in
        `contextlib.aclosing(...)`: closing it cancels the generation and releases the lock at once."""
        async with self.lock:
            # generate() checks its arguments and encodes the prompt when called: in a thread, like every step
            pieces: Iterator[str] = await asyncio.to_thread(self.model.generate, **kwargs)
            try:
                while True:
                    piece = await _in_thread(next, pieces, _END)
                    if piece is _END:
                        return
                    yield piece
            finally:
                pieces.close()  # stops the sampling loop; no thread is inside it (see _in_thread)


async def _in_thread(fn: Callable, *args):
    """`fn(*args)` in a worker thread. Cancelled, it still waits for the thread to finish before it re-raises, so
    the caller's lock is never released while the model is in use."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except BaseException:
        with anyio.CancelScope(shield=True):  # starlette cancels through anyio: shield the wait from it too
            await asyncio.wait({work})
        raise
