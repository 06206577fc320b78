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
from iptserver.policy import Decision, MatchKind, Policy
from iptserver.schema.load import Loaded
from iptserver.schema.values import IPAddress

log = logging.getLogger(__name__)

# Seconds an entry outlives the TTL handed out: its timeout starts before the client
# receives the answer, and a client may round its cache time up.
HOLD_MARGIN = 2
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
    for nothing but its own.
    """

    def __init__(self, apply: Callable[[list[Learned]], Awaitable[None]]) -> None:
        self._apply = apply
        self._pending: list[tuple[list[Learned], asyncio.Future[None]]] = []
        self._running: asyncio.Task[None] | None = None

    async def submit(self, entries: list[Learned]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((entries, future))
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            entries = [entry for part, _ in batch for entry in part]
            try:
                await self._apply(entries)
            except Exception as e:  # handed to every waiter, which reports it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)


class Router:
    """Implements the DNS proxy's ``AnswerSink``."""

    def __init__(
        self, state: State, apply: Callable[[list[Learned]], Awaitable[None]] | None
    ) -> None:
        self.state = state
        self._batcher = Batcher(apply) if apply is not None else None
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
            await self._batcher.submit(entries)
        self.learned.update(
            d.exit for d in decisions if d.kind is MatchKind.DOMAIN and d.exit is not None
        )
        ttl_cfg = self.state.policy.schema.ttl
        cap = ttl_cfg.client_max or ttl_cfg.hold
        if shortest is not None:
            cap = min(cap, shortest)
        return min(ttl, cap)
