"""How long an answer's addresses stay routed, and when a repeat answer is written again.

Pure: the policy's decisions for one answer go in, the kernel entries it needs and the TTL
clients may keep it come out. No clock is read here; callers pass ``now``
(``time.monotonic()`` seconds).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from iptserver.dataplane.plan import KernelPlan, LearnedEntry
from iptserver.policy import Decision, MatchKind
from iptserver.policy.sources import SourceClass
from iptserver.schema.model import Schema, Ttl
from iptserver.schema.values import IPAddress

# Seconds an entry outlives the TTL handed out: its timeout starts before the client
# receives the answer, and a client may round its cache time up.
HOLD_MARGIN = 2
# A repeat answer is not written again while the entry it would write has at least this
# share of its hold left (and the same mark): its TTL is capped to what is left instead.
REWRITE_AT = 0.5
PRUNE_AT = 4096  # remembered entries before the expired ones are swept out
# Live entries remembered at most (each ~240 bytes): past it the oldest are forgotten.
MAX_REMEMBERED = 200_000
_SET_BITS = 8  # a remembered entry's key: the address, then its set's index
_SET_MASK = (1 << _SET_BITS) - 1


@dataclass(frozen=True, slots=True)
class RuleTarget:
    """Where a domain rule's learned entries go: worked out once per schema load."""

    hold: int  # seconds
    mark: int
    sets: tuple[str, str]  # the learned sets of its weight: IPv4, IPv6


def rule_targets(
    schema: Schema, plan: KernelPlan, source: SourceClass | None = None
) -> dict[int, RuleTarget]:
    """Each domain rule's target, by rule index: for a client of ``source``, its own
    rules write to its class's learned sets, the rules without sources to the general
    ones (they decide as they would for any client)."""
    own = set(source.rules) if source is not None else set()
    targets = {}
    for index, rule in enumerate(schema.rules):
        if not rule.domains or (rule.sources and index not in own):
            continue
        where = source.index if index in own and source is not None else None
        targets[index] = RuleTarget(
            rule.hold or schema.ttl.hold,
            plan.exit(rule.exit).mark,
            (
                plan.learned_set(rule.weight, 4, where),
                plan.learned_set(rule.weight, 6, where),
            ),
        )
    return targets


# A learned entry the kernel was given: its mark, when its timeout ends, the answer's
# names (qname and CNAME chain, one space-separated text: names hold no raw spaces) and
# the domain rule that won it. A plain tuple of plain values on purpose, as its key (an
# int) is: the collector stops tracking those, so a full collection does not walk every
# address a busy entry holds. With 200,000 entries one takes 2.4 ms so, and 38-40 ms
# when they are dataclasses or named tuples (measured), a stall every answer waiting at
# that moment would pay. About 240 bytes an entry (with a set and version in a tuple
# key and the names as a tuple: 360).
Written = tuple[int, float, str, int]


@dataclass(slots=True)
class Routed:
    """One answer as decided: what it writes, and the TTL clients may keep it."""

    ttl: int
    entries: list[LearnedEntry]  # repeats left out
    exits: list[str]  # the exit of each domain decision: counted once written
    shortest: int | None  # the shortest hold among ``entries``
    generation: int  # the remembered entries' generation when decided
    now: float  # when decided
    pending: bool = True  # entries still to write
    names: tuple[str, ...] = ()
    rules: list[int] = field(default_factory=list)  # the domain rule of each entry


def client_ttl(ttl: int, caps: Ttl) -> int:
    """The answer's TTL capped by the schema: no client keeps an address past its hold."""
    return min(ttl, caps.client_max or caps.hold)


def repeat_ttl(written: Written | None, target: RuleTarget, now: float) -> int | None:
    """The TTL a repeat answer gets when the entry it would write is still held long
    enough with the same mark; None when it must be written again."""
    if written is None:
        return None
    mark, ends, _, _ = written
    if mark != target.mark:
        return None
    left = int(ends - now) - HOLD_MARGIN
    if left < target.hold * REWRITE_AT:
        return None
    return min(target.hold, left)


def host_entry(ip: IPAddress, target: RuleTarget) -> LearnedEntry:
    network = (IPv4Network if ip.version == 4 else IPv6Network)((int(ip), ip.max_prefixlen))
    return LearnedEntry(
        target.sets[ip.version == 6], network, target.mark, target.hold + HOLD_MARGIN
    )


class WrittenEntries:
    """Per learned set and address, what was last written there.

    Swept of expired entries once it doubles past ``PRUNE_AT``; past ``limit`` live
    entries the oldest written are forgotten (a repeat of one is written again: the kernel
    keeps it either way). ``forget`` (after a reload or a failed kernel write) starts a
    new generation, so answers decided before it are not remembered when their write
    completes.
    """

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        # address as an int, shifted left by 8, or'ed with its (set, IP version)'s index
        self._written: dict[int, Written] = {}
        self._sets: dict[tuple[str, int], int] = {}  # (set, IP version) -> index
        self._limit = limit
        self._prune_at = min(PRUNE_AT, limit)
        self.generation = 0
        self.evicted = 0  # live entries forgotten past ``limit``

    def __len__(self) -> int:
        return len(self._written)

    def _key(self, set_name: str, version: int, address: int) -> int:
        index = self._sets.get((set_name, version))
        if index is None:
            index = self._sets[(set_name, version)] = len(self._sets)
            if index > _SET_MASK:
                raise ValueError(f"more than {_SET_MASK + 1} learned sets")
        return address << _SET_BITS | index

    def get(self, set_name: str, address: IPAddress) -> Written | None:
        index = self._sets.get((set_name, address.version))
        if index is None:
            return None
        return self._written.get(int(address) << _SET_BITS | index)

    def forget(self) -> None:
        self._written.clear()
        self._sets.clear()
        self._prune_at = min(PRUNE_AT, self._limit)
        self.generation += 1

    def remember(self, routed: Routed) -> None:
        """``routed``'s entries are in the kernel (unless decided before ``forget``)."""
        if routed.generation != self.generation:
            return
        written = self._written
        names = " ".join(routed.names)
        for entry, rule in zip(routed.entries, routed.rules, strict=True):
            address = entry.network.network_address
            key = self._key(entry.set_name, address.version, int(address))
            written.pop(key, None)  # to the end: the newest written go last
            written[key] = (entry.mark, routed.now + entry.timeout, names, rule)
        if len(written) >= self._prune_at:
            self._prune(routed.now)

    def _prune(self, now: float) -> None:
        written = self._written
        for key in [k for k, (_, ends, _, _) in written.items() if ends <= now]:
            del written[key]
        if len(written) > self._limit:  # the oldest first, down to 90 % of the limit
            over = len(written) - self._limit * 9 // 10
            for key in list(itertools.islice(written, over)):
                del written[key]
            self.evicted += over
        self._prune_at = min(max(PRUNE_AT, 2 * len(written)), self._limit)

    def written_by(
        self, set_name: str, version: int, address: int
    ) -> tuple[tuple[str, ...], int] | None:
        """The names and domain rule of the answer that last wrote ``address`` (an IPv4
        or IPv6 address as an int) in the set."""
        index = self._sets.get((set_name, version))
        found = self._written.get(address << _SET_BITS | index) if index is not None else None
        if found is None:
            return None
        _, _, names, rule = found
        return (tuple(names.split(" ")) if names else ()), rule


def route_answer(
    decisions: Iterable[Decision],
    targets: dict[int, RuleTarget],
    written: WrittenEntries,
    ttl: int,
    names: Sequence[str],
    now: float,
) -> Routed:
    """The entries an answer's domain decisions need, repeats left out, and its TTL
    (``ttl`` already capped by ``client_ttl``)."""
    routed = Routed(ttl, [], [], None, written.generation, now, names=tuple(names))
    for decision in decisions:
        if decision.kind is not MatchKind.DOMAIN or decision.rule is None:
            continue
        ip = decision.ip
        assert ip is not None and decision.exit is not None
        target = targets[decision.rule]
        routed.exits.append(decision.exit)
        left = repeat_ttl(written.get(target.sets[ip.version == 6], ip), target, now)
        if left is not None:
            routed.ttl = min(routed.ttl, left)
            continue
        routed.entries.append(host_entry(ip, target))
        routed.rules.append(decision.rule)
        routed.ttl = min(routed.ttl, target.hold)
        routed.shortest = (
            target.hold if routed.shortest is None else min(routed.shortest, target.hold)
        )
    return routed
