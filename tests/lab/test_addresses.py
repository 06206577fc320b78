"""The lab's address plan: documentation ranges only, every way out told apart."""

from __future__ import annotations

import ipaddress
import itertools

from iptserver.lab.addresses import (
    CLIENT,
    DNS_AUTHORITY,
    EXIT_NAMES,
    LAB_COUNTRIES,
    LAB_UNPLACED,
    MESH,
    SEEN_AS,
    TUNNELS,
    UPLINKS,
)

DOCUMENTATION = [
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
]


def test_far_side_ranges_are_documentation_ranges_and_never_overlap() -> None:
    nets = [n for country in LAB_COUNTRIES.values() for n in country] + list(LAB_UNPLACED)
    for net in nets:
        assert any(net.version == d.version and net.subnet_of(d) for d in DOCUMENTATION), net  # type: ignore[arg-type]
    for a, b in itertools.combinations(nets, 2):
        assert not a.overlaps(b), (a, b)  # type: ignore[arg-type]


def test_the_far_side_tells_every_way_out_apart_by_its_uplink_address() -> None:
    assert set(SEEN_AS.values()) == {"direct", *EXIT_NAMES}
    for node, ((mine4, _), (mine6, _)) in UPLINKS.items():
        way = "direct" if node == "entry" else node
        assert SEEN_AS[ipaddress.ip_address(mine4)] == way
        assert SEEN_AS[ipaddress.ip_address(mine6)] == way


def test_the_client_is_inside_the_mesh_and_tunnels_and_the_authority_are_not() -> None:
    def in_mesh(text: str) -> bool:
        address = ipaddress.ip_address(text)
        return any(address in net for net in MESH if net.version == address.version)

    assert all(in_mesh(a) for pair in CLIENT for a in pair)
    assert not any(in_mesh(a) for ends in TUNNELS.values() for pair in ends for a in pair)
    for address in DNS_AUTHORITY:
        assert any(address in net for net in LAB_UNPLACED if net.version == address.version)
