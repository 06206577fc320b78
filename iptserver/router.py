"""Carries decisions out: the policy core decides each answer IP's exit, the dataplane
learns the ones a domain rule won, and the answer's TTL is capped so that no client keeps
an address longer than its route lives. Shared by the DNS proxy and the HTTP API.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from iptserver.dataplane.kernel import Learned
from iptserver.dataplane.plan import KernelPlan
from iptserver.errors import DataplaneError
from iptserver.policy import Decision, MatchKind, Policy
from iptserver.schema.load import Loaded
from iptserver.schema.values import IPAddress, IPNetwork

log = logging.getLogger(__name__)

# Seconds an entry outlives the TTL handed out: its timeout starts before the client
# receives the answer, and a client may round its cache time up.
HOLD_MARGIN = 2
# What a learn call newly put in the export table (None: an apply that does not say).
Exported = frozenset[IPNetwork] | None
RECENT = 100


@dataclass(frozen=True, slots=True)
class State:
    """What one schema load produced; swapped whole on reload."""

    policy: Policy
    plan: KernelPlan
    loaded: Loaded | None = None  # the file it came from: explain cites rules by line


class Batcher:
    """Runs ``apply`` on everything submitted while the previous run was busy, in one go.

    Answers that arrive together share one kernel round trip per set; a lone answer waits
    for nothing but its own. ``apply`` may return the networks it newly exported (see
    ``Dataplane.learn``); each waiter gets those of its own entries.
    """

    def __init__(self, apply: Callable[[list[Learned]], Awaitable[Exported]]) -> None:
        self._apply = apply
        self._pending: list[tuple[list[Learned], asyncio.Future[Exported]]] = []
        self._running: asyncio.Task[None] | None = None

    async def submit(self, entries: list[Learned]) -> frozenset[IPNetwork]:
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
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(fresh)


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


class Router:
    """Implements the DNS proxy's ``AnswerSink``."""

    def __init__(
        self,
        state: State,
        apply: Callable[[list[Learned]], Awaitable[Exported]] | None,
        expire: Callable[[], Awaitable[float | None]] | None = None,
    ) -> None:
        """``expire``: removes exported host routes whose hold is over (kernel.export_table)
        and returns the next deadline."""
        self.state = state
        self._batcher = Batcher(apply) if apply is not None else None
        self._expiry = ExpiryTimer(expire) if expire is not None else None
        # The last decisions, for the status page and /v1/routes.
        self.recent: deque[tuple[tuple[str, ...], Decision]] = deque(maxlen=RECENT)
        # For metrics, read at scrape time: answers seen, IPs learned per exit, and a
        # hook the HTTP API sets to time each policy decision.
        self.answers = 0
        self.learned: Counter[str] = Counter()
        self.observe_decision: Callable[[float], None] | None = None

    def learned_entries(self, decisions: Sequence[Decision]) -> tuple[list[Learned], int | None]:
        """The entries a batch of decisions needs, and the shortest hold among them."""
        policy, plan = self.state.policy, self.state.plan
        schema = policy.schema
        entries = []
        shortest: int | None = None
        for decision in decisions:
            if decision.kind is not MatchKind.DOMAIN or decision.rule is None:
                continue
            ip = decision.ip
            assert ip is not None
            rule = schema.rules[decision.rule]
            hold = rule.hold or schema.ttl.hold
            entries.append(
                Learned(
                    plan.learned_set(rule.weight, ip.version),
                    ipaddress.ip_network(ip),
                    plan.exit(rule.exit).mark,
                    hold + HOLD_MARGIN,
                )
            )
            shortest = hold if shortest is None else min(shortest, hold)
        return entries, shortest

    async def learn(self, names: Sequence[str], addresses: Sequence[IPAddress], ttl: int) -> int:
        self.answers += 1
        started = time.perf_counter()
        decisions = self.state.policy.decide(names, addresses)
        if self.observe_decision is not None:
            self.observe_decision(time.perf_counter() - started)
        entries, shortest = self.learned_entries(decisions)
        self.recent.extend((tuple(names), d) for d in decisions)
        if entries and self._batcher is not None:
            fresh = await self._batcher.submit(entries)
            if self._expiry is not None and self.state.plan.export_table is not None:
                assert shortest is not None
                self._expiry.wake_by(time.monotonic() + shortest + HOLD_MARGIN)
            delay = self.state.policy.schema.kernel.export_delay_ms
            if fresh and delay:
                # OSPF is carrying the new routes to the mesh: a client behind another
                # node (an office) must not connect before its router knows the way.
                await asyncio.sleep(delay / 1000)
        self.learned.update(
            d.exit for d in decisions if d.kind is MatchKind.DOMAIN and d.exit is not None
        )
        ttl_cfg = self.state.policy.schema.ttl
        cap = ttl_cfg.client_max or ttl_cfg.hold
        if shortest is not None:
            cap = min(cap, shortest)
        return min(ttl, cap)

    def exports_changed(self) -> None:
        """The dataplane (re)built its export table: look for expired routes now, and
        from then on at each deadline."""
        if self._expiry is not None:
            self._expiry.wake_by(asyncio.get_running_loop().time())

    def close(self) -> None:
        if self._expiry is not None:
            self._expiry.close()
