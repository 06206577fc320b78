"""A brute-force implementation of DESIGN §3, written for clarity, not speed.

It shares nothing with the policy core but the parsed schema: every rule is tried in
turn, names with ``re``/``str`` operations, IPs with ``ipaddress`` containment, and
countries through ``geoip2``'s own ``Reader.country`` model.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import geoip2.database
import geoip2.errors

from iptserver.schema.model import Schema
from iptserver.schema.values import DomainPattern, IPAddress, PatternKind

NEVER_DIVERTED = [
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
]


def name_matches(pattern: DomainPattern, name: str) -> bool:
    name = name.lower().rstrip(".")
    value = pattern.value
    if pattern.kind is PatternKind.EXACT:
        return name == value
    if pattern.kind is PatternKind.SUBTREE:
        return name == value or name.endswith("." + value)
    if pattern.kind is PatternKind.BELOW:
        return name.endswith("." + value)
    return re.match(value, name, re.IGNORECASE) is not None


class ReferenceGeo:
    def __init__(self, path: Path) -> None:
        self.reader = geoip2.database.Reader(str(path))

    def country(self, ip: IPAddress) -> tuple[str, int] | None:
        try:
            response = self.reader.country(ip)
        except geoip2.errors.AddressNotFoundError:
            return None
        code = response.country.iso_code
        return (code, response.traits.network.prefixlen) if code else None


def _mesh_nets(schema: Schema) -> list[Any]:
    """DESIGN: "the mesh subnets" are never diverted: as listed, and every subnet the
    tunnels, nodes and clients sections name."""
    nets: list[Any] = [*schema.mesh, *(t.subnet for t in schema.tunnels.values())]
    for node in schema.nodes.values():
        nets.extend(node.subnets)
    if schema.clients is not None:
        nets.append(schema.clients.subnet)
    return nets


def reference_decision(
    schema: Schema, names: list[str], ip: IPAddress | None, geo: ReferenceGeo | None
) -> tuple[str | None, int | None]:
    """(exit, rule index) for one destination; rule None for default/main/private."""
    if ip is not None and any(
        ip in net for net in [*NEVER_DIVERTED, *_mesh_nets(schema)] if net.version == ip.version
    ):
        return None, None
    host = ip.max_prefixlen if ip is not None else 128
    located = geo.country(ip) if geo is not None and ip is not None else None
    best: tuple[int, int, int] | None = None
    for index, rule in enumerate(schema.rules):
        specificities = []
        if any(name_matches(p, n) for p in rule.domains for n in names):
            specificities.append(host)
        if ip is not None:
            specificities += [
                net.prefixlen for net in rule.nets if net.version == ip.version and ip in net
            ]
            if located is not None and located[0] in rule.countries:
                specificities.append(located[1])
        for specificity in specificities:
            key = (rule.weight, specificity, -index)
            if best is None or key > best:
                best = key
    if best is not None:
        winner = -best[2]
        return schema.rules[winner].exit, winner
    return schema.default, None
