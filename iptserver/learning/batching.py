"""Kernel writes from the event loop: batched while the kernel is busy, and expiry
sweeps at the earliest deadline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from iptserver.dataplane.plan import LearnedEntry
from iptserver.errors import DataplaneError
from iptserver.schema.values import IPNetwork

log = logging.getLogger(__name__)

# What a write newly put in the export table (None: a writer that does not say).
Exported = frozenset[IPNetwork] | None
Apply = Callable[[list[LearnedEntry]], Awaitable[Exported]]


T = TypeVar("T")


def settle(
    futures: list[asyncio.Future[T]], result: T | None = None, error: Exception | None = None
) -> None:
    """Give every waiter of a shared write its outcome: ``error`` if set, else ``result``."""
    for future in futures:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]


class Batcher:
    """Runs ``apply`` on everything submitted while the previous run was busy, in one go.

    Answers that arrive together share one kernel round trip per set; a lone answer waits
    for nothing but its own. ``apply`` may return the networks it newly exported (see
    ``Dataplane.learn``); each waiter gets those of its own entries.
    """

    def __init__(self, apply: Apply) -> None:
        self._apply = apply
        self._pending: list[tuple[list[LearnedEntry], asyncio.Future[Exported]]] = []
        self._running: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """Whether entries submitted earlier are still on their way to the kernel."""
        return self._running is not None and not self._running.done()

    async def submit(self, entries: list[LearnedEntry]) -> frozenset[IPNetwork]:
        future: asyncio.Future[Exported] = asyncio.get_running_loop().create_future()
        self._pending.append((entries, future))
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._drain())
        fresh = await future
        return frozenset(e.network for e in entries if e.network in fresh) if fresh else frozenset()

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            entries = [entry for part, _ in batch for entry in part]
            try:
                fresh = await self._apply(entries)
            except Exception as e:  # handed to every waiter, which reports it
                settle([future for _, future in batch], error=e)
            else:
                settle([future for _, future in batch], fresh)


class ExpiryTimer:
    """Runs ``sweep`` at the earliest deadline it has been told of.

    ``sweep`` removes the exported host routes whose hold is over and returns the next
    deadline (``loop.time()``, i.e. ``time.monotonic()`` seconds) or None; the timer then
    sleeps until that one. An earlier deadline (a rule with a shorter hold) moves it up.
    """

    RETRY = 1.0  # seconds before a sweep the kernel refused is tried again

    def __init__(self, sweep: Callable[[], Awaitable[float | None]]) -> None:
        self._sweep = sweep
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None
        self._task: asyncio.Task[None] | None = None

    def wake_by(self, deadline: float) -> None:
        if self._at is not None and self._at <= deadline:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._at = deadline
        self._handle = asyncio.get_running_loop().call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._handle = self._at = None
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            upcoming = await self._sweep()
        except DataplaneError as e:
            log.error(
                "cannot remove expired exported routes (retrying in %.0f s): %s", self.RETRY, e
            )
            upcoming = loop.time() + self.RETRY
        if upcoming is not None:
            self.wake_by(upcoming)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._task is not None:
            self._task.cancel()
        self._handle = self._at = self._task = None
