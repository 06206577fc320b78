"""The dataplane seen from the event loop.

pyroute2's blocking API cannot run in the event loop's thread, so every ``Dataplane`` call
runs on one kernel thread, one at a time. The exception is the hot path: learned entries
are written right on the caller's thread, on a socket of their own, when the write is one
raw ipset message (no export table): the hop to the kernel thread and back would cost an
answer more than the write, and a reload's apply (tens of ms) would hold answers up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from iptserver.dataplane import firewall
from iptserver.dataplane.ipset import IPSets
from iptserver.dataplane.kernel import Adoption, Dataplane, write_learned
from iptserver.dataplane.listing import RouteLine, stream_learned, stream_routes
from iptserver.dataplane.plan import ExitPlan, KernelPlan, LearnedEntry
from iptserver.errors import DataplaneError
from iptserver.schema.model import Route
from iptserver.schema.values import IPAddress, IPNetwork

T = TypeVar("T")

log = logging.getLogger(__name__)


class KernelWorker:
    """Owns a ``Dataplane`` and the thread it runs on; use ``open`` to make one."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")
        self._lock = threading.Lock()  # one dataplane call at a time, any thread
        self._writer: IPSets | None = None  # learn_now's socket
        self._write_lock = threading.Lock()
        self._dataplane: Dataplane | None = None
        self._adopting: asyncio.Task[None] | None = None
        self._due = Adoption()
        # Called once an apply's exported routes are rebuilt (the learner's expiry).
        self.exports_adopted: Callable[[], None] | None = None

    @classmethod
    async def open(cls, dns_port: int | None, state_file: Path | None) -> KernelWorker:
        """Raises DataplaneError when the kernel's netlink sockets cannot be opened."""
        worker = cls()
        try:
            worker._dataplane = await worker._call(Dataplane, dns_port, state_file)
            worker._writer = await worker._call(IPSets)
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
        """See ``Dataplane.apply``: the problems of exits that could not be set up.

        What the apply left for a reading of the learned sets (see ``Adoption``) runs
        after it, in the background: a restart with a million entries held answers at
        once, and drops stale entries and rebuilds exported routes a few seconds later."""
        problems = await self._call(self.dataplane.apply, plan)
        due = self.dataplane.adoption
        if self._adopting is not None and not self._adopting.done():
            self._adopting.cancel()  # for an older plan; what it had left to do is redone
            due |= self._due
        self._due = due
        if due:
            self._adopting = asyncio.create_task(self._adopt(plan, due))
        return problems

    async def _adopt(self, plan: KernelPlan, due: Adoption) -> None:
        try:
            await adopt(self.dataplane, plan, due, self._call)
        except DataplaneError as e:
            log.error(
                "cannot read the learned sets after applying the schema (%s): entries of "
                "removed exits, or exported routes, may be left until they expire",
                e,
            )
            return
        self._due = Adoption()
        if due.exports and self.exports_adopted is not None:
            self.exports_adopted()

    async def adopted(self) -> None:
        """Wait for the reading an apply left (if any) to end."""
        if self._adopting is not None:
            await asyncio.shield(self._adopting)

    def learn_now(self, entries: Sequence[LearnedEntry]) -> bool:
        """Write ``entries`` right here if that needs no wait and no pyroute2; False
        when it cannot (``learn`` then).

        Learned sets are made before a plan that names them is used, and kept across
        reloads, so this need not wait for an apply under way."""
        if self._writer is None or not self.dataplane.learns_ipsets_only:
            return False
        if not self._write_lock.acquire(blocking=False):
            return False
        try:
            write_learned(self._writer, entries)
            return True
        finally:
            self._write_lock.release()

    async def learn(self, entries: Sequence[LearnedEntry]) -> frozenset[IPNetwork]:
        """Write ``entries``, here if ``learn_now`` can, else on the kernel thread; the
        networks newly exported."""
        if self.learn_now(entries):
            return frozenset()
        return await self._call(self.dataplane.learn, entries)

    async def expire_exports(self, now: float | None = None) -> float | None:
        return await self._call(self.dataplane.expire_exports, now)

    async def set_routes(self, routed_by: dict[str, str | None]) -> list[str]:
        """The health monitor's route changes."""
        return await self._call(self.dataplane.set_routes, routed_by)

    async def relink(self, interface: str) -> list[str]:
        return await self._call(self.dataplane.relink, interface)

    async def reannounce(self, interface: str) -> list[str]:
        return await self._call(self.dataplane.reannounce, interface)

    async def follow_main(self) -> list[str]:
        return await self._call(self.dataplane.follow_main)

    async def route_batches(
        self, ip: IPAddress | None, marks: Collection[int] | None
    ) -> AsyncIterator[list[RouteLine]]:
        """The learned entries as /v1/routes shows them (``listing.stream_routes``):
        listed by a child process, so neither the kernel thread nor the interpreter lock
        answers wait for is held."""
        plan = self.dataplane.plan
        if plan is None:
            return
        async for batch in stream_routes(plan, ip=ip, marks=marks):
            yield batch

    async def guard_drops(self) -> int:
        """See ``firewall.guard_drops`` (iptables-save in a thread: no lock needed)."""
        return await asyncio.to_thread(firewall.guard_drops)

    async def set_sizes(self) -> dict[str, int]:
        return await self._call(self.dataplane.set_sizes)

    async def close(self, keep_state: bool) -> None:
        """Remove the kernel state (unless ``keep_state``), close the sockets, end the thread."""
        if self._adopting is not None:
            self._adopting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._adopting
        try:
            await self._call(self.dataplane.stop, keep_state)
        finally:
            await self._call(self.dataplane.close)
            if self._writer is not None:
                self._writer.close()
            self._executor.shutdown()


async def adopt(
    dataplane: Dataplane,
    plan: KernelPlan,
    due: Adoption,
    call: Callable[..., Awaitable[Any]],
) -> None:
    """Do what an apply of ``plan`` left for a reading of the learned sets: listed by a
    child process, acted on a batch at a time through ``call`` (the kernel thread)."""
    if due.stale:
        marks = {e.mark for e in plan.exits}
        dropped = 0
        async for batch in stream_learned(plan, except_marks=marks):
            await call(dataplane.drop_learned, batch)
            dropped += len(batch)
        if dropped:
            log.info("dropped %d learned entries of exits that are gone", dropped)
    if due.exports and plan.export_table is not None:
        await call(dataplane.held_exports)
        problems: list[str] = []
        tunnels = {e.mark for e in plan.exits if e.route is Route.INTERFACE}
        async for batch in stream_learned(plan, marks=tunnels):
            problems += await call(dataplane.adopt_exports, batch)
        await call(dataplane.prune_exports)
        for problem in problems:
            log.warning("%s", problem)
