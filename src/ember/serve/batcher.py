"""Dynamic micro-batching: concurrent requests are grouped up to `max_batch` items or
`max_wait_ms`, run as one batch, and each caller gets exactly its own rows back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Queue of (inputs, future); a single worker task drains it into batches."""

    def __init__(self, run_batch: Callable[[Tensor], Tensor], max_batch: int, max_wait_ms: float,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self.queue: asyncio.Queue[tuple[Tensor, asyncio.Future[Tensor]]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._worker())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def submit(self, x: Tensor) -> Tensor:
        """Outputs for the rows of `x`, computed in a batch shared with other requests."""
        future: asyncio.Future[Tensor] = asyncio.get_running_loop().create_future()
        await self.queue.put((x, future))
        return await future

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            rows = len(items[0][0])
            deadline = loop.time() + self.max_wait
            while rows < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                items.append(item)
                rows += len(item[0])
            batch = torch.cat([x for x, _ in items])
            try:
                # The model runs in a thread so the event loop keeps accepting requests.
                out = await loop.run_in_executor(None, self.run_batch, batch)
            except Exception as exc:  # noqa: BLE001  (each waiting caller gets the error)
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            if self.on_batch is not None:
                self.on_batch(rows)
            start = 0
            for x, fut in items:
                if not fut.done():
                    fut.set_result(out[start:start + len(x)])
                start += len(x)
