"""Decide the exit of each destination IP, exactly as DESIGN §3 says.

Among the rules that match an IP: the highest weight wins; then the most specific match
(an IP from a DNS answer is a host route, a net counts by its prefix length, a country by
the prefix of the GeoIP network holding the IP); then the rule written first. No match:
the default exit, else the host's main table. Private, link-local, CGNAT and mesh
destinations are never diverted.

Everything here is computed from the schema once, in ``Policy.__init__``; a decision is a
few hash lookups and binary searches, with no I/O. GeoIP comes in through ``GeoLookup``.
"""

from __future__ import annotations

import enum
import ipaddress
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from iptserver.policy.domains import DomainMatcher
from iptserver.policy.prefixes import PrefixMap
from iptserver.policy.sources import source_classes
from iptserver.schema.model import Exit, Rule, Schema
from iptserver.schema.values import IPAddress, IPNetwork, normalize_name

# Never diverted, whatever the rules say. Documentation and benchmark ranges are absent
# on purpose: they stand in for the public internet in the lab.
PRIVATE_NETS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "::ffff:0:0/96",  # IPv4-mapped: never on the wire, a DNS-rebinding trick
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)


class GeoLookup(Protocol):
    def lookup(self, ip: IPAddress) -> tuple[str, int] | None:
        """Country code and prefix length of the GeoIP network holding ``ip``."""


class MatchKind(enum.Enum):
    DOMAIN = "domain"
    NET = "net"
    COUNTRY = "country"


class Reason(enum.Enum):
    RULE = "rule"  # a rule matched
    DEFAULT = "default"  # no rule matched; the schema's default exit
    MAIN = "main"  # no rule matched and no default: the host's main table
    PRIVATE = "private"  # private or mesh destination, never diverted


@dataclass(frozen=True, slots=True)
class Candidate:
    """One rule that matches a destination, and how strongly."""

    rule: int
    kind: MatchKind
    weight: int
    specificity: int  # prefix length; a host route for DNS-learned IPs
    detail: str  # the pattern, net or "COUNTRY network" that matched
    name: str | None = None  # the name (query or CNAME) a domain pattern matched

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.weight, self.specificity, -self.rule)


class Decision(NamedTuple):
    """The exit of one destination (a tuple: one is made per answer IP)."""

    ip: IPAddress | None
    exit: str | None  # None: the host's main routing table
    reason: Reason
    rule: int | None = None
    kind: MatchKind | None = None


# (weight, specificity, -rule) compares as §3 orders matches; then rule index and kind.
_Best = tuple[tuple[int, int, int], int, MatchKind]
_PRIVATE: _Best = ((sys.maxsize, 0, 0), -1, MatchKind.NET)


def _better(a: _Best, b: _Best) -> bool:
    return a[0] > b[0]


def _best_hit(
    matcher: DomainMatcher,
    names: Sequence[str],
    weights: Sequence[int],
    best: tuple[int, int] | None,
) -> tuple[int, int] | None:
    """``best``, or the (weight, -rule) of a better hit of ``matcher`` on ``names``."""
    match = matcher.match
    for name in names:
        for hit in match(normalize_name(name)):
            candidate = (weights[hit.rule], -hit.rule)
            if best is None or candidate > best:
                best = candidate
    return best


class _Tables:
    """The lookup tables of some of the schema's rules (by their index in the schema)."""

    def __init__(
        self,
        rules: Sequence[tuple[int, Rule]],
        never: Iterable[IPNetwork] = (),
    ) -> None:
        self.domains = DomainMatcher((i, pattern) for i, rule in rules for pattern in rule.domains)
        # Rule nets and the never-diverted nets in one map: the latter outrank any rule.
        # One value per rule and prefix length, shared: lists bring 100,000s of nets, and
        # neighbours with one value merge into one segment.
        values: dict[tuple[int, int], _Best] = {}

        def value(i: int, weight: int, length: int) -> _Best:
            found = values.get((i, length))
            if found is None:
                found = values[(i, length)] = ((weight, length, -i), i, MatchKind.NET)
            return found

        self.nets: PrefixMap[_Best] = PrefixMap(
            [
                *((net, _PRIVATE) for net in never),
                *(
                    (net, value(i, rule.weight, net.prefixlen))
                    for i, rule in rules
                    for net in rule.nets
                ),
            ],
            _better,
        )
        # Per country, the rule that wins among equals: highest weight, then first.
        self.countries: dict[str, tuple[int, int]] = {}
        for i, rule in rules:
            for country in rule.countries:
                held = self.countries.get(country)
                if held is None or rule.weight > held[0]:
                    self.countries[country] = (rule.weight, i)
        self.max_country_weight = max((w for w, _ in self.countries.values()), default=None)


class Policy:
    def __init__(self, schema: Schema, geo: GeoLookup | None = None) -> None:
        self.schema = schema
        self.geo = geo
        rules = schema.rules
        self._exits = [rule.exit for rule in rules]
        self._weights = [rule.weight for rule in rules]
        # Rules with sources apply to some clients only: one table per source class.
        self.source_classes = source_classes(schema)
        general = [(i, rule) for i, rule in enumerate(rules) if not rule.sources]
        tables = _Tables(general, (*PRIVATE_NETS, *schema.never_diverted()))
        self._domains = tables.domains
        self._nets = tables.nets
        self._countries = tables.countries
        self._max_country_weight = tables.max_country_weight
        self._classes = [_Tables([(i, rules[i]) for i in c.rules]) for c in self.source_classes]
        self._class_of: PrefixMap[int] = PrefixMap(
            [(net, c.index) for c in self.source_classes for net in c.networks],
            lambda a, b: False,
        )

    def source_of(self, client: IPAddress | None) -> int | None:
        """The source class of a client's address (None: only the rules without sources
        apply to it)."""
        if client is None or not self._class_of:
            return None
        if client.version == 6 and client.ipv4_mapped is not None:  # a dual-stack socket
            client = client.ipv4_mapped
        return self._class_of.lookup(client)

    @property
    def exits(self) -> dict[str, Exit]:
        return self.schema.exits

    # -- the hot path -------------------------------------------------------------------

    def decide(
        self, names: Sequence[str], ips: Iterable[IPAddress], source: int | None = None
    ) -> list[Decision]:
        """The exit of each IP of one answer; ``names`` are the query name and CNAMEs;
        ``source``: the asking client's source class (``source_of``)."""
        if source is not None:
            tables = self._classes[source]
            best_domain = self._best_domain(names, tables.domains)
            return [self._decide_ip_sourced(ip, best_domain, tables) for ip in ips]
        best_domain = self._best_domain(names)
        return [self._decide_ip(ip, best_domain) for ip in ips]

    def _best_domain(
        self, names: Sequence[str], more: DomainMatcher | None = None
    ) -> tuple[int, int] | None:
        """(weight, -rule) of the winning domain rule: all share host-route specificity."""
        best = _best_hit(self._domains, names, self._weights, None)
        if more is not None:
            best = _best_hit(more, names, self._weights, best)
        return best

    def decide_name(self, names: Sequence[str], source: int | None = None) -> Decision:
        """Where an answer for ``names`` would go, by the domain rules alone.

        A net or country rule of higher weight may still claim a particular answer IP.
        """
        more = self._classes[source].domains if source is not None else None
        best = self._best_domain(names, more)
        if best is not None:
            rule = -best[1]
            return Decision(None, self._exits[rule], Reason.RULE, rule, MatchKind.DOMAIN)
        return self._unmatched(None)

    def decide_ip(self, ip: IPAddress, source: int | None = None) -> Decision:
        """The exit of an IP seen in no DNS answer."""
        if source is not None:
            return self._decide_ip_sourced(ip, None, self._classes[source])
        return self._decide_ip(ip, None)

    def _decide_ip_sourced(
        self, ip: IPAddress, best_domain: tuple[int, int] | None, tables: _Tables
    ) -> Decision:
        """``_decide_ip`` for a client of a source class: its rules compete too."""
        decision = self._decide_ip(ip, best_domain)
        if decision.reason is Reason.PRIVATE:
            return decision
        best: _Best | None = None
        if decision.rule is not None:
            assert decision.kind is not None
            best = (self._key(decision, ip), decision.rule, decision.kind)
        net = tables.nets.lookup(ip)
        if net is not None and (best is None or net[0] > best[0]):
            best = net
        best = self._by_country(ip, best, tables.countries, tables.max_country_weight)
        if best is None:
            return decision
        return Decision(ip, self._exits[best[1]], Reason.RULE, best[1], best[2])

    def _key(self, decision: Decision, ip: IPAddress) -> tuple[int, int, int]:
        """The (weight, specificity, -rule) a general rule's decision won with."""
        assert decision.rule is not None
        rule = decision.rule
        if decision.kind is MatchKind.DOMAIN:
            return (self._weights[rule], ip.max_prefixlen, -rule)
        if decision.kind is MatchKind.NET:
            found = self._nets.lookup(ip)
            assert found is not None
            return found[0]
        found_geo = self.geo.lookup(ip) if self.geo is not None else None
        assert found_geo is not None
        return (self._weights[rule], found_geo[1], -rule)

    def _decide_ip(self, ip: IPAddress, best_domain: tuple[int, int] | None) -> Decision:
        net = self._nets.lookup(ip)
        if net is _PRIVATE:
            return Decision(ip, None, Reason.PRIVATE)
        best: _Best | None = None
        if best_domain is not None:
            weight, neg_rule = best_domain
            best = ((weight, ip.max_prefixlen, neg_rule), -neg_rule, MatchKind.DOMAIN)
        if net is not None and (best is None or net[0] > best[0]):
            best = net
        best = self._by_country(ip, best, self._countries, self._max_country_weight)
        if best is not None:
            return Decision(ip, self._exits[best[1]], Reason.RULE, best[1], best[2])
        return self._unmatched(ip)

    def _by_country(
        self,
        ip: IPAddress,
        best: _Best | None,
        countries: dict[str, tuple[int, int]],
        max_weight: int | None,
    ) -> _Best | None:
        """``best``, or the country rule that beats it; GeoIP is asked only when a
        country rule could."""
        if self.geo is None or max_weight is None or (best is not None and best[0][0] > max_weight):
            return best
        found = self.geo.lookup(ip)
        held = countries.get(found[0]) if found else None
        if found and held:
            key = (held[0], found[1], -held[1])
            if best is None or key > best[0]:
                return (key, held[1], MatchKind.COUNTRY)
        return best

    def _unmatched(self, ip: IPAddress | None) -> Decision:
        if self.schema.default is not None:
            return Decision(ip, self.schema.default, Reason.DEFAULT)
        return Decision(ip, None, Reason.MAIN)

    # -- explanations (slow path: every candidate, for people) -------------------------

    def candidates(
        self, names: Sequence[str], ip: IPAddress | None, source: int | None = None
    ) -> list[Candidate]:
        """Every rule matching this destination (for a client of ``source``), best first,
        each by its best match.

        With no ``ip``, only the domain rules are known, at host-route specificity.
        """
        found: dict[int, Candidate] = {}

        def offer(c: Candidate) -> None:
            if c.rule not in found or c.key > found[c.rule].key:
                found[c.rule] = c

        host = ip.max_prefixlen if ip is not None else 128
        matchers = [self._domains]
        if source is not None:
            matchers.append(self._classes[source].domains)
        applies = set(self.source_classes[source].rules) if source is not None else set()
        hits = [
            (hit, name) for m in matchers for name in names for hit in m.match(normalize_name(name))
        ]
        for hit, name in hits:
            offer(
                Candidate(
                    hit.rule,
                    MatchKind.DOMAIN,
                    self._weights[hit.rule],
                    host,
                    hit.pattern.text,
                    normalize_name(name),
                )
            )
        if ip is not None:
            geo = self.geo.lookup(ip) if self.geo is not None else None
            for i, rule in enumerate(self.schema.rules):
                if rule.sources and i not in applies:
                    continue
                for net in rule.nets:
                    if ip.version == net.version and ip in net:
                        offer(Candidate(i, MatchKind.NET, rule.weight, net.prefixlen, str(net)))
                if geo is not None and geo[0] in rule.countries:
                    network = ipaddress.ip_network((ip, geo[1]), strict=False)
                    offer(
                        Candidate(
                            i, MatchKind.COUNTRY, rule.weight, geo[1], f"{geo[0]} ({network})"
                        )
                    )
        return sorted(found.values(), key=lambda c: c.key, reverse=True)

    def is_private(self, ip: IPAddress) -> bool:
        return self._nets.lookup(ip) is _PRIVATE
