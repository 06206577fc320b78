"""PrefixMap against brute force: the best value among the networks holding an address.

The map flattens nested blocks into segments; the ways that can go wrong are at block
edges, in parents resumed after a child, and with blocks repeated or shared by families.
Networks are drawn from a small range so they nest and touch often.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iptserver.policy.prefixes import PrefixMap
from iptserver.schema.values import IPAddress, IPNetwork

V = TypeVar("V")

V4_BASE = int(ipaddress.IPv4Address("198.51.100.0"))
V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))
SPAN = 1024  # addresses around each base that networks and probes are drawn from


def higher(a: int, b: int) -> bool:
    return a > b


def brute_force(
    entries: Sequence[tuple[IPNetwork, V]], ip: IPAddress, better: Callable[[V, V], bool]
) -> V | None:
    """The reference: scan every network, keep the best value that holds ``ip``."""
    best: V | None = None
    for net, value in entries:
        if net.version == ip.version and ip in net and (best is None or better(value, best)):
            best = value
    return best


def _network(version: int, offset: int, prefixlen: int) -> IPNetwork:
    base = V4_BASE if version == 4 else V6_BASE
    address = ipaddress.ip_address(base + offset)
    return ipaddress.ip_network((address, prefixlen), strict=False)


@st.composite
def networks(draw: st.DrawFn, versions: Sequence[int] = (4, 6)) -> IPNetwork:
    """A block near the base; mostly small (host bits 0-10), sometimes very wide."""
    version = draw(st.sampled_from(versions))
    bits = 32 if version == 4 else 128
    host_bits = draw(
        st.one_of(st.integers(0, 10), st.sampled_from([bits, bits - 8, bits - 16, 12, 16]))
    )
    return _network(version, draw(st.integers(0, SPAN - 1)), bits - host_bits)


def probes(nets: Sequence[IPNetwork], versions: Sequence[int]) -> st.SearchStrategy[IPAddress]:
    """Random addresses near the bases plus every block edge and its neighbours."""
    edges: list[IPAddress] = []
    for net in nets:
        first, last = int(net.network_address), int(net.broadcast_address)
        family = type(net.network_address)
        for x in (first - 1, first, last, last + 1):
            if 0 <= x < 2**net.max_prefixlen:
                edges.append(family(x))
    near = st.builds(
        lambda version, offset: ipaddress.ip_address(
            (V4_BASE if version == 4 else V6_BASE) + offset
        ),
        st.sampled_from(versions),
        st.integers(-16, SPAN + 16),
    )
    return st.one_of(near, st.sampled_from(edges)) if edges else near


def _check(entries: list[tuple[IPNetwork, int]], ips: list[IPAddress]) -> None:
    prefix_map = PrefixMap(entries, higher)
    assert bool(prefix_map) == bool(entries)
    for ip in ips:
        assert prefix_map.lookup(ip) == brute_force(entries, ip, higher), ip


@settings(max_examples=150)
@given(st.data())
def test_ipv4_matches_brute_force(data: st.DataObject) -> None:
    entries = data.draw(st.lists(st.tuples(networks((4,)), st.integers(-5, 20)), max_size=12))
    ips = data.draw(st.lists(probes([n for n, _ in entries], (4,)), min_size=1, max_size=20))
    _check(entries, ips)


@settings(max_examples=150)
@given(st.data())
def test_ipv6_matches_brute_force(data: st.DataObject) -> None:
    entries = data.draw(st.lists(st.tuples(networks((6,)), st.integers(-5, 20)), max_size=12))
    ips = data.draw(st.lists(probes([n for n, _ in entries], (6,)), min_size=1, max_size=20))
    _check(entries, ips)


@settings(max_examples=200)
@given(st.data())
def test_mixed_families_in_one_map(data: st.DataObject) -> None:
    """A v4 block must never answer for a v6 address with the same integer, nor back."""
    entries = data.draw(st.lists(st.tuples(networks(), st.integers(-5, 20)), max_size=16))
    ips = data.draw(st.lists(probes([n for n, _ in entries], (4, 6)), min_size=1, max_size=24))
    _check(entries, ips)


@settings(max_examples=100)
@given(st.data())
def test_ties_keep_a_best_value(data: st.DataObject) -> None:
    """With a ``better`` that sees only part of the value, any best-ranked value will do."""
    entries = data.draw(
        st.lists(
            st.tuples(networks(), st.tuples(st.integers(0, 3), st.integers(0, 99))), max_size=12
        )
    )
    ips = data.draw(st.lists(probes([n for n, _ in entries], (4, 6)), max_size=20))
    prefix_map = PrefixMap(entries, lambda a, b: a[0] > b[0])
    for ip in ips:
        holding = [value for net, value in entries if net.version == ip.version and ip in net]
        found = prefix_map.lookup(ip)
        if not holding:
            assert found is None, ip
        else:
            assert found in holding, ip
            assert found is not None and found[0] == max(v[0] for v in holding), ip


# (id, networks with values, address, expected): the edges spelled out once.
EXAMPLES = [
    ("empty", [], "198.51.100.1", None),
    ("outside", [("198.51.100.0/24", 1)], "198.51.101.0", None),
    ("first-address", [("198.51.100.0/24", 1)], "198.51.100.0", 1),
    ("last-address", [("198.51.100.0/24", 1)], "198.51.100.255", 1),
    ("child-wins", [("198.51.100.0/24", 1), ("198.51.100.128/25", 2)], "198.51.100.200", 2),
    ("parent-wins", [("198.51.100.0/24", 5), ("198.51.100.128/25", 2)], "198.51.100.200", 5),
    ("parent-resumes", [("198.51.100.0/24", 1), ("198.51.100.0/26", 2)], "198.51.100.64", 1),
    ("before-child", [("198.51.100.0/24", 1), ("198.51.100.64/26", 2)], "198.51.100.63", 1),
    ("same-block-twice", [("198.51.100.0/24", 1), ("198.51.100.0/24", 3)], "198.51.100.9", 3),
    ("siblings-touch", [("198.51.100.0/25", 1), ("198.51.100.128/25", 2)], "198.51.100.128", 2),
    ("default-route", [("0.0.0.0/0", 1), ("198.51.100.7/32", 2)], "255.255.255.255", 1),
    ("zero-address", [("0.0.0.0/0", 1), ("0.0.0.0/32", 2)], "0.0.0.0", 2),
    ("host-route", [("0.0.0.0/0", 1), ("198.51.100.7/32", 2)], "198.51.100.7", 2),
    ("v4-block-v6-address", [("0.0.0.0/0", 1)], "::1", None),
    ("v6-block-v4-address", [("::/0", 1)], "0.0.0.1", None),
    ("v6-nested", [("::/0", 1), ("2001:db8::/32", 2), ("2001:db8::1/128", 0)], "2001:db8::1", 2),
    ("v6-last", [("::/0", 1), ("ffff::/16", 2)], "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 2),
]


@pytest.mark.parametrize(
    ("texts", "address", "expected"), [c[1:] for c in EXAMPLES], ids=[c[0] for c in EXAMPLES]
)
def test_examples(texts: list[tuple[str, int]], address: str, expected: int | None) -> None:
    """Deterministic edges, so a failure names the case without shrinking."""
    entries = [(ipaddress.ip_network(t), v) for t, v in texts]
    assert PrefixMap(entries, higher).lookup(ipaddress.ip_address(address)) == expected
