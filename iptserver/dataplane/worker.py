"""The dataplane seen from the event loop.

pyroute2's blocking API cannot run in the event loop's thread, so every ``Dataplane`` call
runs on one kernel thread, one at a time. The exception is the hot path: learned entries
are written right on the caller's thread when the dataplane is idle and the write is one
raw ipset message (no export table): the hop to the kernel thread and back would cost an
answer more than the write.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from iptserver.dataplane.kernel import Dataplane
from iptserver.dataplane.listing import Learned, stream_learned
from iptserver.dataplane.plan import ExitPlan, KernelPlan, LearnedEntry
from iptserver.schema.values import IPAddress, IPNetwork

T = TypeVar("T")


class KernelWorker:
    """Owns a ``Dataplane`` and the thread it runs on; use ``open`` to make one."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")
        self._lock = threading.Lock()  # one dataplane call at a time, any thread
        self._dataplane: Dataplane | None = None

    @classmethod
    async def open(cls, dns_port: int | None, state_file: Path | None) -> KernelWorker:
        """Raises DataplaneError when the kernel's netlink sockets cannot be opened."""
        worker = cls()
        try:
            worker._dataplane = await worker._call(Dataplane, dns_port, state_file)
        except BaseException:
            worker._executor.shutdown()
            raise
        return worker

    @property
    def dataplane(self) -> Dataplane:
        assert self._dataplane is not None, "KernelWorker.open makes the dataplane"
        return self._dataplane

    @property
    def exits_in_kernel(self) -> tuple[ExitPlan, ...]:
        return self.dataplane.exits_in_kernel

    async def _call(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._locked, partial(call, *args)
        )

    def _locked(self, call: Callable[[], T]) -> T:
        with self._lock:
            return call()

    async def apply(self, plan: KernelPlan) -> list[str]:
        """See ``Dataplane.apply``: the problems of exits that could not be set up."""
        return await self._call(self.dataplane.apply, plan)

    def learn_now(self, entries: Sequence[LearnedEntry]) -> bool:
        """Write ``entries`` right here if that needs no wait and no pyroute2; False
        when it cannot (``learn`` then)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if not self.dataplane.learns_ipsets_only:
                return False
            self.dataplane.learn(entries)
            return True
        finally:
            self._lock.release()

    async def learn(self, entries: Sequence[LearnedEntry]) -> frozenset[IPNetwork]:
        """Write ``entries``, here if ``learn_now`` can, else on the kernel thread; the
        networks newly exported."""
        if self.learn_now(entries):
            return frozenset()
        return await self._call(self.dataplane.learn, entries)

    async def expire_exports(self) -> float | None:
        return await self._call(self.dataplane.expire_exports)

    async def set_routes(self, routed_by: dict[str, str | None]) -> list[str]:
        """The health monitor's route changes."""
        return await self._call(self.dataplane.set_routes, routed_by)

    async def relink(self, interface: str) -> list[str]:
        return await self._call(self.dataplane.relink, interface)

    async def reannounce(self, interface: str) -> list[str]:
        return await self._call(self.dataplane.reannounce, interface)

    async def follow_main(self) -> list[str]:
        return await self._call(self.dataplane.follow_main)

    async def learned_batches(
        self, ip: IPAddress | None, marks: Collection[int] | None
    ) -> AsyncIterator[list[Learned]]:
        """See ``listing.stream_learned``: listed by a child process, so neither the
        kernel thread nor the interpreter lock answers wait for is held."""
        plan = self.dataplane.plan
        if plan is None:
            return
        async for batch in stream_learned(plan, ip=ip, marks=marks):
            yield batch

    async def set_sizes(self) -> dict[str, int]:
        return await self._call(self.dataplane.set_sizes)

    async def close(self, keep_state: bool) -> None:
        """Remove the kernel state (unless ``keep_state``), close the sockets, end the thread."""
        try:
            await self._call(self.dataplane.stop, keep_state)
        finally:
            await self._call(self.dataplane.close)
            self._executor.shutdown()
