"""A tunnel's ``subnet6``: the IPv6 half of a dual-stack tunnel, checked where written."""

from __future__ import annotations

import ipaddress

import pytest

from iptserver.errors import SchemaError
from iptserver.mesh.topology import mesh_of
from iptserver.policy import Policy, Reason
from iptserver.schema import parse_schema

HEAD = "exits:\n  uk: {interface: wg_uk}\nrules:\n  - {exit: uk, nets: ['::/0']}\n"
NODES = "nodes:\n  entry: {entry: true, endpoint: 198.18.0.1}\n  uk: {endpoint: 198.18.1.1}\n"


def tunnel(subnet: str, subnet6: str) -> str:
    return (
        f"tunnels:\n  t1:\n    subnet: {subnet}\n    subnet6: '{subnet6}'\n"
        "    hosts: {entry: {}, uk: {}}\n"
    )


def problems(text: str) -> list[str]:
    with pytest.raises(SchemaError) as caught:
        parse_schema(text, "s.yaml")
    return [str(p) for p in caught.value.problems]


def test_both_ends_get_an_address_of_each_family() -> None:
    schema = parse_schema(HEAD + NODES + tunnel("10.99.0.0/30", "fd99::/64"), "s.yaml").schema
    mesh = mesh_of(schema)
    (entry,) = mesh.node("entry").links
    (uk,) = mesh.node("uk").links
    assert [str(a) for a in entry.addresses] == ["10.99.0.1/30", "fd99::1/64"]
    assert [str(a) for a in uk.addresses] == ["10.99.0.2/30", "fd99::2/64"]
    assert (str(entry.ipv6), str(entry.peer_address6)) == ("fd99::1/64", "fd99::2/64")
    # The IPv6 subnet is the mesh's own: never diverted.
    policy = Policy(schema)
    assert policy.decide_ip(ipaddress.ip_address("fd99::2")).reason is Reason.PRIVATE
    assert ipaddress.ip_network("fd99::/64") in schema.never_diverted()


def test_a_tunnel_without_subnet6_is_as_before() -> None:
    schema = parse_schema(
        HEAD + NODES + tunnel("10.99.0.0/30", "x").replace("    subnet6: 'x'\n", ""), "s.yaml"
    ).schema
    (entry,) = mesh_of(schema).node("entry").links
    assert entry.address6 is None and entry.ipv6 is None
    assert [str(a) for a in entry.addresses] == ["10.99.0.1/30"]


@pytest.mark.parametrize(
    ("subnet", "subnet6", "expected"),
    [
        (
            "10.99.0.0/30",
            "10.99.1.0/30",
            "s.yaml:11:14: tunnels.t1.subnet6: 10.99.1.0/30 is not an IPv6 subnet "
            "(subnet6 is the tunnel's IPv6 subnet)",
        ),
        (
            "'fd98::/64'",
            "fd99::/64",
            "s.yaml:11:14: tunnels.t1.subnet6: subnet fd98::/64 is IPv6 already: give subnet6 "
            "with an IPv4 subnet",
        ),
        (
            "10.99.0.0/30",
            "fd99::1/128",
            "s.yaml:11:14: tunnels.t1.subnet6: fd99::1/128 has fewer than two host addresses "
            "(use a /126 or /127, or a /64)",
        ),
    ],
    ids=["not-ipv6", "subnet-already-ipv6", "too-small"],
)
def test_mistakes_name_subnet6(subnet: str, subnet6: str, expected: str) -> None:
    assert problems(HEAD + NODES + tunnel(subnet, subnet6)) == [expected]


def test_an_ipv6_probe_needs_an_ipv6_address_on_its_tunnel() -> None:
    """The probe's source is the tunnel's IPv6 address: without one the far side's
    answer would not come back through the tunnel, and the exit would look down."""
    watched = HEAD.replace(
        "uk: {interface: wg_uk}",
        "uk: {interface: t1, health: {probe: ['[2001:db8::1]:80', '198.51.100.80:80']}}",
    )
    assert problems(
        watched + NODES + tunnel("10.99.0.0/30", "x").replace("    subnet6: 'x'\n", "")
    ) == [
        "s.yaml:2:40: exits.uk.health.probe.0: 2001:db8::1 is IPv6 and tunnel 't1' (t1) has "
        "no IPv6 address to probe from: give it a subnet6, or probe an IPv4 target"
    ]
    parse_schema(watched + NODES + tunnel("10.99.0.0/30", "fd99::/64"), "s.yaml")
    # A tunnel the schema does not describe: nothing to check against.
    parse_schema(watched, "s.yaml")
