"""Micro-batching: concurrent requests gathered for a few milliseconds and answered by one call.

A model answers a batch of 16 questions in little more time than one, so under load the server
runs one forward pass for whatever arrived together instead of one per request. The first request
of a batch waits at most `max_wait_ms` for company; a full batch (`max_batch`) goes at once.
max_batch=1 turns batching off (each request runs alone, in arrival order).

Batches run one at a time on the executor given (the server's single model thread), so the event
loop stays free to accept requests while a forward pass runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(self, run_batch: Callable[[list[T]], list[R]], executor: Executor, max_batch: int = 16,
                 max_wait_ms: float = 5.0):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}")
        self.run_batch, self.executor = run_batch, executor
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.batch_sizes: list[int] = []  # one entry per call of run_batch: how many requests it answered
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))
        self._worker = None

    async def submit(self, item: T) -> R:
        """Queue one request; returns its result (or raises its batch's error)."""
        if self._worker is None:
            raise RuntimeError("MicroBatcher.start() was not awaited (the app's lifespan did not run)")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _gather(self) -> list[tuple[T, asyncio.Future]]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():  # already waiting: take it without a timer
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [(item, future) for item, future in batch if not future.cancelled()]  # a client gone
            if not live:
                continue
            self.batch_sizes.append(len(live))
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, [item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch of {len(live)} gave {len(results)} results")
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(live, results):
                if not future.done():
                    future.set_result(result)
