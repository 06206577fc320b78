"""Carries decisions out: the policy core decides each answer IP's exit, the dataplane
learns the ones a domain rule won, and the answer's TTL is capped so that no client keeps
an address longer than its route lives. Shared by the DNS proxy and the HTTP API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

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
# A repeat answer is not written again while the entry it would write has at least this
# share of its hold left (and the same mark): its TTL is capped to what is left instead.
REWRITE_AT = 0.5
PRUNE_AT = 4096  # remembered entries before the expired ones are swept out
# A written entry: its mark, when its timeout ends (time.monotonic()), and the answer's
# names and domain rule that wrote it.
Written = tuple[int, float, tuple[str, ...], int]


@dataclass(frozen=True, slots=True)
class State:
    """What one schema load produced; swapped whole on reload."""

    policy: Policy
    plan: KernelPlan
    loaded: Loaded | None = None  # the file it came from: explain cites rules by line


@dataclass(slots=True)
class Routed:
    """One answer as ``Router.route`` decided it."""

    ttl: int  # how long clients may keep the answer
    entries: list[Learned]  # the kernel entries it writes (repeats left out)
    exits: list[str]  # the exit of each domain decision: counted once written
    shortest: int | None  # the shortest hold among ``entries``
    generation: int  # the router's, when decided
    now: float  # when decided (time.monotonic())
    pending: bool = True  # entries still to write: ``Router.write`` finishes it
    names: tuple[str, ...] = ()  # the answer's qname and CNAME chain
    rules: list[int] = field(default_factory=list)  # the domain rule of each entry


@dataclass(frozen=True, slots=True)
class _RuleTarget:
    hold: int  # seconds
    mark: int
    sets: tuple[str, str]  # the learned sets of its weight: IPv4, IPv6


def _targets(state: State) -> dict[int, _RuleTarget]:
    """Where each domain rule's learned entries go, with what mark and hold: worked out
    once per schema load, not per answer."""
    schema, plan = state.policy.schema, state.plan
    return {
        index: _RuleTarget(
            rule.hold or schema.ttl.hold,
            plan.exit(rule.exit).mark,
            (plan.learned_set(rule.weight, 4), plan.learned_set(rule.weight, 6)),
        )
        for index, rule in enumerate(schema.rules)
        if rule.domains
    }


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

    @property
    def busy(self) -> bool:
        """Whether entries submitted earlier are still on their way to the kernel."""
        return self._running is not None and not self._running.done()

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
    """Implements the DNS proxy's ``AnswerSink``.

    Remembers, per learned set and address, the mark it last wrote and when that entry's
    timeout ends: a repeat answer (CDN addresses come back all the time) that finds the
    entry holding the same mark with at least ``REWRITE_AT`` of its hold left is not
    written again; its TTL is capped to what is left instead, so no client keeps the
    address longer than the entry lives. A new ``state`` (reload) forgets it all.
    """

    def __init__(
        self,
        state: State,
        apply: Callable[[list[Learned]], Awaitable[Exported]] | None,
        expire: Callable[[], Awaitable[float | None]] | None = None,
        apply_now: Callable[[list[Learned]], bool] | None = None,
    ) -> None:
        """``expire``: removes exported host routes whose hold is over (kernel.export_table)
        and returns the next deadline. ``apply_now``: writes entries at once on the
        caller's thread when it can do so without waiting and without exporting routes
        (False when it cannot: ``apply`` then writes them)."""
        assert apply_now is None or apply is not None
        self._state = state
        self._batcher = Batcher(apply) if apply is not None else None
        self._apply_now = apply_now
        self._expiry = ExpiryTimer(expire) if expire is not None else None
        # (set, address) -> what wrote its entry last.
        self._written: dict[tuple[str, IPAddress], Written] = {}
        self._prune_at = PRUNE_AT
        self._generation = 0  # bumped when the kernel's sets may no longer be as written
        self._targets = _targets(state)
        # The last decisions, for the status page and /v1/decisions.
        self.recent: deque[tuple[tuple[str, ...], Decision]] = deque(maxlen=RECENT)
        # For metrics, read at scrape time: answers seen, IPs learned per exit, and a
        # hook the HTTP API sets to time each policy decision.
        self.answers = 0
        self.learned: Counter[str] = Counter()
        self.observe_decision: Callable[[float], None] | None = None

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, state: State) -> None:
        """A reload: its sets may be new ones (another weight) or rebuilt."""
        self._state = state
        self._targets = _targets(state)
        self.forget()

    def forget(self) -> None:
        """Forget which entries were written: the kernel's learned sets were swapped,
        flushed or removed, so every answer writes its entries again."""
        self._written.clear()
        self._prune_at = PRUNE_AT
        self._generation += 1

    def route(self, names: Sequence[str], addresses: Sequence[IPAddress], ttl: int) -> Routed:
        """Decide an answer: its TTL, and the entries the kernel does not hold yet, for
        ``write_now`` or ``write``."""
        self.answers += 1
        state = self._state
        started = time.perf_counter()
        decisions = state.policy.decide(names, addresses)
        if self.observe_decision is not None:
            self.observe_decision(time.perf_counter() - started)
        key = tuple(names)
        self.recent.extend((key, d) for d in decisions)
        ttl_cfg = state.policy.schema.ttl
        cap = min(ttl, ttl_cfg.client_max or ttl_cfg.hold)
        now = time.monotonic()
        routed = Routed(cap, [], [], None, self._generation, now, names=key)
        for decision in decisions:
            if decision.kind is not MatchKind.DOMAIN or decision.rule is None:
                continue
            ip = decision.ip
            assert ip is not None and decision.exit is not None
            target = self._targets[decision.rule]
            hold = target.hold
            set_name = target.sets[ip.version == 6]
            routed.exits.append(decision.exit)
            written = self._written.get((set_name, ip))
            if written is not None and written[0] == target.mark:
                left = int(written[1] - now) - HOLD_MARGIN
                if left >= hold * REWRITE_AT:
                    routed.ttl = min(routed.ttl, hold, left)
                    continue
            network = (IPv4Network if ip.version == 4 else IPv6Network)((int(ip), ip.max_prefixlen))
            routed.entries.append(Learned(set_name, network, target.mark, hold + HOLD_MARGIN))
            routed.rules.append(decision.rule)
            routed.ttl = min(routed.ttl, hold)
            routed.shortest = hold if routed.shortest is None else min(routed.shortest, hold)
        if not routed.entries or self._batcher is None:  # nothing to write, or no kernel
            routed.pending = False
            self.learned.update(routed.exits)
        return routed

    def write_now(self, answers: Sequence[Routed]) -> bool:
        """Write the entries ``answers`` still need at once, in one go, when that needs
        no wait (see ``apply_now``); False when it does: ``write`` each then. Raises
        DataplaneError when the kernel refused them."""
        pending = [routed for routed in answers if routed.pending]
        if not pending:
            return True
        write = self._apply_now
        # Never past answers still on their way to the kernel: entries go in order.
        if write is None or (self._batcher is not None and self._batcher.busy):
            return False
        entries = [entry for routed in pending for entry in routed.entries]
        if not write(entries):
            return False
        for routed in pending:
            self._written_by(routed)
        return True

    async def write(self, routed: Routed) -> None:
        """Write what ``route`` could not write at once; raises DataplaneError."""
        assert self._batcher is not None and routed.pending
        fresh = await self._batcher.submit(routed.entries)
        if self._expiry is not None and self._state.plan.export_table is not None:
            assert routed.shortest is not None
            self._expiry.wake_by(time.monotonic() + routed.shortest + HOLD_MARGIN)
        delay = self._state.policy.schema.kernel.export_delay_ms
        if fresh and delay:
            # OSPF is carrying the new routes to the mesh: a client behind another
            # node (an office) must not connect before its router knows the way.
            await asyncio.sleep(delay / 1000)
        self._written_by(routed)

    def _written_by(self, routed: Routed) -> None:
        """``routed``'s entries are in the kernel: remember them, count them."""
        routed.pending = False
        self.learned.update(routed.exits)
        if routed.generation != self._generation:
            return  # decided before a reload: the sets it wrote may be gone
        written = self._written
        for entry, rule in zip(routed.entries, routed.rules, strict=True):
            written[(entry.set_name, entry.network.network_address)] = (
                entry.mark,
                routed.now + entry.timeout,
                routed.names,
                rule,
            )
        if len(written) >= self._prune_at:
            now = time.monotonic()
            for key in [k for k, (_, ends, _, _) in written.items() if ends <= now]:
                del written[key]
            self._prune_at = max(PRUNE_AT, 2 * len(written))

    async def learn(self, names: Sequence[str], addresses: Sequence[IPAddress], ttl: int) -> int:
        """Route an answer; the TTL clients may keep it. Raises DataplaneError."""
        routed = self.route(names, addresses, ttl)
        if not self.write_now((routed,)):
            await self.write(routed)
        return routed.ttl

    def exports_changed(self) -> None:
        """The dataplane (re)built its export table: look for expired routes now, and
        from then on at each deadline."""
        if self._expiry is not None:
            self._expiry.wake_by(asyncio.get_running_loop().time())

    def close(self) -> None:
        self.forget()
        if self._expiry is not None:
            self._expiry.close()

    def learned_by(self) -> dict[IPAddress, tuple[tuple[str, ...], int]]:
        """Address -> the names and domain rule of the answer that last wrote its entry
        (for /v1/routes; entries written before the last reload are not known)."""
        return {
            address: (names, rule) for (_, address), (_, _, names, rule) in self._written.items()
        }
