"""Which clients a rule with ``sources`` applies to, cut into source classes.

Rules with sources may overlap (one for 10.77.1.0/24, one for 10.77.1.3): a client gets
every rule whose sources hold its address. The client address space is cut where any
source begins or ends; the pieces that share the same set of sourced rules form one
*source class*. Classes are disjoint, so a client is in one class at most, and the
kernel tries one class's sets for it (``iptserver.dataplane.plan``), exactly as the
policy core decides for it.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from iptserver.schema.model import Schema
from iptserver.schema.values import IPNetwork


@dataclass(frozen=True, slots=True)
class SourceClass:
    index: int  # names the class's kernel sets and chain
    rules: tuple[int, ...]  # the rules with sources that apply to its clients, in order
    networks: tuple[IPNetwork, ...]  # its clients' addresses, as few CIDRs as can be


def rule_sources(schema: Schema, index: int) -> tuple[IPNetwork, ...]:
    """The networks of rule ``index``'s sources, clients' names resolved to their
    addresses (as ``iptserver render`` numbers them)."""
    from iptserver.mesh.topology import mesh_of

    rule = schema.rules[index]
    named = [s for s in rule.sources if isinstance(s, str)]
    addresses = {}
    if named:
        clients = mesh_of(schema).clients
        assert clients is not None  # the loader checked every name against clients.peers
        addresses = {peer.name: peer.address for peer in clients.peers}
    return tuple(
        ipaddress.ip_network(addresses[s]) if isinstance(s, str) else s for s in rule.sources
    )


def source_classes(schema: Schema) -> tuple[SourceClass, ...]:
    """The source classes of ``schema``'s rules (none when no rule has sources)."""
    sourced = {i: rule_sources(schema, i) for i, rule in enumerate(schema.rules) if rule.sources}
    if not sourced:
        return ()
    by_rules: dict[tuple[int, ...], list[IPNetwork]] = {}
    for version in (4, 6):
        spans = [
            (int(net.network_address), int(net.broadcast_address), i)
            for i, nets in sourced.items()
            for net in nets
            if net.version == version
        ]
        cuts = sorted({start for start, _, _ in spans} | {end + 1 for _, end, _ in spans})
        for start, stop in itertools.pairwise(cuts):
            rules = tuple(sorted({i for s, e, i in spans if s <= start and stop - 1 <= e}))
            if rules:
                by_rules.setdefault(rules, []).extend(_cidrs(version, start, stop - 1))
    return tuple(
        SourceClass(k, rules, _collapsed(nets))
        for k, (rules, nets) in enumerate(sorted(by_rules.items()))
    )


def _collapsed(nets: list[IPNetwork]) -> tuple[IPNetwork, ...]:
    v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
    return (*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6))


def _cidrs(version: int, first: int, last: int) -> list[IPNetwork]:
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    return list(ipaddress.summarize_address_range(make(first), make(last)))


def sourced_rules(classes: Sequence[SourceClass]) -> frozenset[int]:
    return frozenset(i for c in classes for i in c.rules)
