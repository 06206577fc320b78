"""Carries decisions out: the policy core decides each answer IP's exit, the dataplane
learns the ones a domain rule won, and the answer's TTL is capped so that no client keeps
an address longer than its route lives. Shared by the DNS proxy and the HTTP API.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from iptserver.dataplane.plan import KernelPlan, LearnedEntry
from iptserver.learning.batching import Apply, Batcher, ExpiryTimer, settle
from iptserver.learning.holds import (
    HOLD_MARGIN,
    Routed,
    RuleTarget,
    WrittenEntries,
    client_ttl,
    route_answer,
    rule_targets,
)
from iptserver.policy import Decision, Policy
from iptserver.schema.load import Loaded
from iptserver.schema.values import IPAddress

RECENT = 100  # decisions kept for the status page and /v1/decisions


@dataclass(frozen=True, slots=True)
class State:
    """What one schema load produced; swapped whole on reload."""

    policy: Policy
    plan: KernelPlan
    loaded: Loaded | None = None  # the file it came from: explain cites rules by line


class Learner:
    """Implements the DNS proxy's ``AnswerSink``.

    Remembers what it wrote (``WrittenEntries``): a repeat answer (CDN addresses come back
    all the time) whose entry is still held long enough with the same mark is not written
    again; its TTL is capped to what is left instead. A new ``state`` (reload) forgets it.
    """

    def __init__(
        self,
        state: State,
        apply: Apply | None,
        expire: Callable[[], Awaitable[float | None]] | None = None,
        apply_now: Callable[[list[LearnedEntry]], bool] | None = None,
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
        self._written = WrittenEntries()
        # Answers of this event-loop turn waiting for one immediate write together.
        self._turn: list[tuple[Routed, asyncio.Future[bool]]] = []
        self._targets = rule_targets(state.policy.schema, state.plan)
        self._source_targets = _source_targets(state)
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
        self._targets = rule_targets(state.policy.schema, state.plan)
        self._source_targets = _source_targets(state)
        self.forget()

    def forget(self) -> None:
        """Forget which entries were written: the kernel's learned sets were swapped,
        flushed or removed, so every answer writes its entries again."""
        self._written.forget()

    def route(
        self,
        names: Sequence[str],
        addresses: Sequence[IPAddress],
        ttl: int,
        client: str | None = None,
    ) -> Routed:
        """Decide an answer for ``client`` (its address; with a port, as logs write it,
        is fine): its TTL, and the entries the kernel does not hold yet, for
        ``write_now`` or ``write``."""
        self.answers += 1
        state = self._state
        started = time.perf_counter()
        targets = self._targets
        source = None
        if self._source_targets and client is not None:
            source = state.policy.source_of(client_address(client))
            if source is not None:
                targets = self._source_targets[source]
        decisions = state.policy.decide(names, addresses, source)
        if self.observe_decision is not None:
            self.observe_decision(time.perf_counter() - started)
        key = tuple(names)
        self.recent.extend((key, d) for d in decisions)
        cap = client_ttl(ttl, state.policy.schema.ttl)
        routed = route_answer(decisions, targets, self._written, cap, key, time.monotonic())
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
        if not write([entry for routed in pending for entry in routed.entries]):
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
        self._written.remember(routed)

    async def learn(
        self,
        names: Sequence[str],
        addresses: Sequence[IPAddress],
        ttl: int,
        client: str | None = None,
    ) -> int:
        """Route an answer for ``client``; the TTL clients may keep it. Raises
        DataplaneError.

        Answers learned in one turn of the event loop share one immediate write (one
        netlink message under load instead of one per answer)."""
        routed = self.route(names, addresses, ttl, client)
        if routed.pending and not await self._write_this_turn(routed):
            await self.write(routed)
        return routed.ttl

    async def _write_this_turn(self, routed: Routed) -> bool:
        if self._apply_now is None:
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._turn.append((routed, future))
        if len(self._turn) == 1:
            asyncio.get_running_loop().call_soon(self._flush_turn)
        return await future

    def _flush_turn(self) -> None:
        turn, self._turn = self._turn, []
        try:
            written = self.write_now([routed for routed, _ in turn])
        except Exception as e:  # handed to every answer of the turn, which reports it
            settle([future for _, future in turn], error=e)
        else:
            settle([future for _, future in turn], written)

    def exports_changed(self) -> None:
        """The dataplane (re)built its export table: look for expired routes now, and
        from then on at each deadline."""
        if self._expiry is not None:
            self._expiry.wake_by(asyncio.get_running_loop().time())

    def close(self) -> None:
        self.forget()
        if self._expiry is not None:
            self._expiry.close()

    def learned_by(
        self, set_name: str, version: int, address: int
    ) -> tuple[tuple[str, ...], int] | None:
        """The names and domain rule of the answer that last wrote ``address`` (as an
        int) in the set (for /v1/routes; entries written before the last reload are not
        known)."""
        return self._written.written_by(set_name, version, address)


def _source_targets(state: State) -> list[dict[int, RuleTarget]]:
    """Per source class, where its clients' domain decisions are written."""
    schema = state.policy.schema
    return [rule_targets(schema, state.plan, c) for c in state.policy.source_classes]


def client_address(client: str) -> IPAddress | None:
    """The address of ``ADDR``, ``ADDR:PORT`` or ``[ADDR6]:PORT`` (None: not one)."""
    host = client
    if client.startswith("["):
        host = client[1:].partition("]")[0]
    elif client.count(":") == 1:
        host = client.partition(":")[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
