"""What the kernel should hold for a schema: computed here, without touching the kernel.

The kernel decides as the policy core does (DESIGN §3) with this layout:

* one fwmark and one routing table per exit (``_DEFAULT`` exits look up ``main``);
* per weight class (rules of one weight), two ``hash:net`` sets per family with the
  ``skbinfo`` extension, each entry carrying its exit's mark: the DNS-learned host entries
  (with timeouts) and the static nets and country networks. A ``hash:net`` lookup is
  longest-prefix, and a learned host entry is only added when its domain rule beat every
  static entry of its class for that address, so "learned, then static" in one class is
  "most specific, then file order" — and classes are tried highest weight first;
* the never-diverted nets (private, link-local, CGNAT, mesh) tried before everything.

Where two rules of one class name the same prefix, the entry carries the mark of the
rule written first, as §3 says.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from iptserver.dataplane.export import HostRoute
from iptserver.policy.core import PRIVATE_NETS
from iptserver.policy.sources import source_classes
from iptserver.schema.model import Exit, Route, Schema
from iptserver.schema.values import IPAddress, IPNetwork

CHAIN = "IPTSERVER"
DNS_CHAIN = "IPTSERVER-DNS"
DOH_CHAIN = "IPTSERVER-DOH"
GUARD_CHAIN = "IPTSERVER-GUARD"
# The kernel drops a client's DNS datagrams past this many times dns.rate_limit: the
# proxy still sees (and counts, and logs) those a little over the rate, but a flood
# costs the event loop nothing past that.
GUARD_FACTOR = 2
# Well-known public DNS-over-HTTPS resolvers (their anycast addresses), rejected on port
# 443 with dns.block_doh; operators add others with dns.doh_servers.
WELL_KNOWN_DOH: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "1.1.1.1/32",
        "1.0.0.1/32",
        "2606:4700:4700::1111/128",
        "2606:4700:4700::1001/128",
        "8.8.8.8/32",
        "8.8.4.4/32",
        "2001:4860:4860::8888/128",
        "2001:4860:4860::8844/128",
        "9.9.9.9/32",
        "149.112.112.112/32",
        "2620:fe::fe/128",
        "2620:fe::9/128",
        "94.140.14.14/32",
        "94.140.15.15/32",
        "2a10:50c0::ad1:ff/128",
        "2a10:50c0::ad2:ff/128",
        "208.67.222.222/32",
        "208.67.220.220/32",
        "2620:119:35::35/128",
        "2620:119:53::53/128",
    )
)
RULE_PRIORITY_BASE = 1000  # ip rule priorities of the exits: before main (32766)
MARK_MASK = 0xFFFFFFFF
FAMILIES = (4, 6)


@dataclass(frozen=True, slots=True)
class LearnedEntry:
    """A DNS-learned host entry to add or refresh in a learned set."""

    set_name: str
    network: IPNetwork
    mark: int
    timeout: int  # seconds


@dataclass(frozen=True, slots=True)
class ExitPlan:
    name: str
    interface: str
    route: Route
    via: str | None
    mark: int
    table: int  # for a host-gateway exit: unused, its rule looks up main
    priority: int


@dataclass(frozen=True, slots=True)
class SetPlan:
    name: str
    family: int
    learned: bool  # DNS-learned host entries with timeouts, kept across reloads
    entries: tuple[tuple[IPNetwork, int], ...] = ()  # (network, mark) for static sets


@dataclass(frozen=True, slots=True)
class WeightClass:
    weight: int
    learned: tuple[SetPlan, SetPlan]  # IPv4, IPv6
    static: tuple[SetPlan, SetPlan]


@dataclass(frozen=True, slots=True)
class SourcePlan:
    """The kernel's view of one source class (``iptserver.policy.sources``): traffic from
    its clients jumps to a chain of its own, which tries, weight by weight, its learned
    set, the general learned set, then its static set (the general nets and its rules'
    nets together, so longest prefix and file order hold across both)."""

    index: int
    chain: str
    clients: tuple[SetPlan, SetPlan]  # the class's client addresses: IPv4, IPv6
    classes: tuple[WeightClass, ...]  # highest weight first


@dataclass(frozen=True, slots=True)
class DnsGuard:
    """Past ``GUARD_FACTOR`` times dns.rate_limit the kernel drops a client's UDP DNS
    queries (per address and per /24 or /56) before the proxy reads them: those to the
    proxy's addresses, and port 53 from the ingress (redirected to it)."""

    client: int  # datagrams a second per address (0: no limit)
    network: int  # per /24 or /56
    burst: float  # seconds of the rate at once
    listen: tuple[tuple[IPAddress, int], ...]


@dataclass(frozen=True, slots=True)
class KernelPlan:
    exits: tuple[ExitPlan, ...]
    classes: tuple[WeightClass, ...]  # highest weight first
    private: tuple[SetPlan, SetPlan]
    default_mark: int | None
    ingress: tuple[str, ...]
    doh: tuple[SetPlan, SetPlan] | None = None  # DoH servers to reject, when blocking
    export_table: int | None = None  # learned host routes for FRR (kernel.export_table)
    max_learned: int = 1_000_000  # entries a learned set holds at most (kernel.max_learned)
    sources: tuple[SourcePlan, ...] = ()  # per source class (rules with sources)
    guard: DnsGuard | None = None  # the kernel's share of dns.rate_limit (None: no limit)
    policy_table: int | None = None  # for nodes with send: policy (FRR imports it)
    policy_routes: tuple[HostRoute, ...] = ()  # what that table holds

    def exit(self, name: str) -> ExitPlan:
        return next(e for e in self.exits if e.name == name)

    def learned_set(self, weight: int, family: int, source: int | None = None) -> str:
        classes = self.classes if source is None else self.sources[source].classes
        for weight_class in classes:
            if weight_class.weight == weight:
                return weight_class.learned[FAMILIES.index(family)].name
        raise KeyError(f"no rule has weight {weight}")

    @property
    def all_classes(self) -> tuple[WeightClass, ...]:
        """The general weight classes, then every source class's."""
        return (*self.classes, *(c for source in self.sources for c in source.classes))

    @property
    def sets(self) -> tuple[SetPlan, ...]:
        found = [*self.private, *(self.doh or ())]
        for source in self.sources:
            found += source.clients
        for weight_class in self.all_classes:
            found += [*weight_class.learned, *weight_class.static]
        return tuple(found)


def set_name(kind: str, weight: int, family: int) -> str:
    """``ipts-d10-4``: DNS-learned, weight 10, IPv4. Negative weights spell ``m``."""
    spelled = f"m{-weight}" if weight < 0 else str(weight)
    return f"ipts-{kind}{spelled}-{family}"


def exit_plans(schema: Schema, previous: Sequence[ExitPlan] = ()) -> tuple[ExitPlan, ...]:
    """Each exit's slot (mark, table and rule priority, unless the schema sets them).

    An exit keeps the slot it had in ``previous`` (the exits the kernel holds); new exits
    take the lowest free ones.
    Established connections (in conntrack) and learned entries (in the sets) carry marks,
    so a reload that reorders, adds or removes exits must not give a mark to another exit.
    """
    held = {e.name: e.priority - RULE_PRIORITY_BASE for e in previous}
    slots = {name: held[name] for name in schema.exits if name in held}
    free = (slot for slot in itertools.count() if slot not in slots.values())
    for name in schema.exits:
        if name not in slots:
            slots[name] = next(free)
    return tuple(_exit_plan(schema, slots[name], name, spec) for name, spec in schema.exits.items())


def _exit_plan(schema: Schema, slot: int, name: str, spec: Exit) -> ExitPlan:
    return ExitPlan(
        name=name,
        interface=spec.interface,
        route=spec.route,
        via=spec.via,
        mark=spec.mark if spec.mark is not None else schema.kernel.mark_base + slot,
        table=spec.table if spec.table is not None else schema.kernel.table_base + slot,
        priority=RULE_PRIORITY_BASE + slot,
    )


def plan(
    schema: Schema,
    countries: Mapping[str, Iterable[IPNetwork]],
    previous: Sequence[ExitPlan] = (),
) -> KernelPlan:
    """The kernel state for ``schema``; ``countries`` lists each country's networks;
    ``previous`` are the exits the kernel holds (they keep their marks)."""
    exits = exit_plans(schema, previous)
    marks = {e.name: e.mark for e in exits}
    general = [i for i, rule in enumerate(schema.rules) if not rule.sources]
    classes = _weight_classes(schema, general, countries, marks, "")
    sources = tuple(
        SourcePlan(
            index=c.index,
            chain=f"{CHAIN}-C{c.index}",
            clients=_plain_sets(f"c{c.index}-src", c.networks),
            classes=_weight_classes(
                schema, sorted([*general, *c.rules]), countries, marks, f"c{c.index}-"
            ),
        )
        for c in source_classes(schema)
    )
    never_diverted = (*PRIVATE_NETS, *schema.never_diverted())
    never = _plain_sets("private", never_diverted)
    policy_table = schema.policy_table()
    doh = None
    if schema.dns.block_doh:
        doh = _plain_sets("doh", (*WELL_KNOWN_DOH, *schema.dns.doh_servers))
    return KernelPlan(
        doh=doh,
        exits=exits,
        classes=tuple(classes),
        private=never,
        default_mark=marks[schema.default] if schema.default is not None else None,
        ingress=tuple(schema.ingress),
        export_table=schema.kernel.export_table,
        max_learned=schema.kernel.max_learned,
        sources=sources,
        guard=_guard(schema),
        policy_table=policy_table,
        policy_routes=_policy_routes(classes, exits, never_diverted) if policy_table else (),
    )


def _policy_routes(
    classes: Sequence[WeightClass], exits: Sequence[ExitPlan], never: Sequence[IPNetwork]
) -> tuple[HostRoute, ...]:
    """What ``send: policy`` nodes are taught: the static nets (rules' nets and country
    networks) whose entry carries a tunnel exit's mark, aggregated per exit to the
    fewest prefixes, each out of its exit's interface. Whatever part of them a higher
    rule sends elsewhere, the entry routes so: it applies the schema to what arrives.
    IPv4 only: FRR 8.4 imports no IPv6 routing table (``ip import-table`` is IPv4)."""
    tunnels = {e.mark: e.interface for e in exits if e.route is Route.INTERFACE}
    nets: dict[str, list[IPNetwork]] = {}
    for weight_class in classes:
        for set_plan in weight_class.static:
            if set_plan.family != 4:
                continue
            for network, mark in set_plan.entries:
                if mark in tunnels:
                    nets.setdefault(tunnels[mark], []).append(network)
    spans = [_span(private) for private in never]
    routes = []
    for interface, networks in sorted(nets.items()):
        v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
        collapsed = ipaddress.collapse_addresses(v4)
        routes += [
            HostRoute(network, interface)
            for network in collapsed
            if not _within(_span(network), spans)
        ]
    return tuple(routes)


def _span(network: IPNetwork) -> tuple[int, int, int]:
    return (network.version, int(network.network_address), int(network.broadcast_address))


def _within(span: tuple[int, int, int], outer: Sequence[tuple[int, int, int]]) -> bool:
    """Whether a network (as a ``_span``) lies inside one of ``outer``'s."""
    version, first, last = span
    return any(v == version and f <= first and last <= t for v, f, t in outer)


def _guard(schema: Schema) -> DnsGuard | None:
    limit = schema.dns.rate_limit
    if not limit.client and not limit.network:
        return None
    return DnsGuard(
        client=round(limit.client * GUARD_FACTOR),
        network=round(limit.network * GUARD_FACTOR),
        burst=limit.burst,
        listen=tuple((address, port) for address, port in schema.dns.listen),
    )


def _weight_classes(
    schema: Schema,
    rules: Sequence[int],
    countries: Mapping[str, Iterable[IPNetwork]],
    marks: Mapping[str, int],
    prefix: str,
) -> tuple[WeightClass, ...]:
    """The weight classes of ``rules`` (indexes, in file order); ``prefix`` tells a
    source class's sets from the general ones (``ipts-c0-d10-4``)."""
    # weight -> (family, address, length) -> (network, mark); the first rule keeps a
    # prefix. Keyed by a tuple of ints, which sorts as the sets list them and hashes far
    # faster than a network (lists bring 100,000s).
    static: dict[int, dict[tuple[int, int, int], tuple[IPNetwork, int]]] = {}
    for index in rules:
        rule = schema.rules[index]
        entries = static.setdefault(rule.weight, {})
        mark = marks[rule.exit]
        networks = [*rule.nets]
        for country in rule.countries:
            networks += countries.get(country, ())
        for network in networks:
            key = (network.version, int(network.network_address), network.prefixlen)
            if key not in entries:
                entries[key] = (network, mark)
    classes = []
    for weight in sorted(static, reverse=True):
        ordered = sorted(static[weight].items())  # once: lists make 100,000s
        by_family = {
            family: tuple(entry for (version, _, _), entry in ordered if version == family)
            for family in FAMILIES
        }
        classes.append(
            WeightClass(
                weight,
                learned=(
                    SetPlan(set_name(prefix + "d", weight, 4), 4, learned=True),
                    SetPlan(set_name(prefix + "d", weight, 6), 6, learned=True),
                ),
                static=(
                    SetPlan(set_name(prefix + "n", weight, 4), 4, False, by_family[4]),
                    SetPlan(set_name(prefix + "n", weight, 6), 6, False, by_family[6]),
                ),
            )
        )
    return tuple(classes)


def _plain_sets(kind: str, networks: Sequence[IPNetwork]) -> tuple[SetPlan, SetPlan]:
    """An IPv4 and an IPv6 set of networks without marks (``ipts-private-4``...)."""
    v4, v6 = (
        SetPlan(
            f"ipts-{kind}-{family}",
            family,
            False,
            tuple((net, 0) for net in networks if net.version == family),
        )
        for family in FAMILIES
    )
    return v4, v6


def exits_to_json(exits: Sequence[ExitPlan]) -> str:
    """The exits the kernel holds, for the state directory: a restarted daemon keeps
    their marks and removes the rules and tables of exits that are gone."""
    return json.dumps(
        [{**asdict(e), "route": e.route.value} for e in exits], indent=2, sort_keys=True
    )


def exits_from_json(text: str) -> tuple[ExitPlan, ...]:
    return tuple(ExitPlan(**{**item, "route": Route(item["route"])}) for item in json.loads(text))
