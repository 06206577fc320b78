"""What each lab node is given, read without building a lab."""

from __future__ import annotations

import ipaddress

import pytest

from iptserver.lab.addresses import CLIENT, EXIT_NAMES, LAB_COUNTRIES, LAB_UNPLACED, MESH
from iptserver.lab.node_config import (
    CLIENT_LAN,
    INGRESS,
    addressing,
    far_side_routes,
    masquerades,
    sysctl_script,
    sysctls,
    tunnel_addressing,
    veths,
)
from iptserver.lab.topology import NODES


@pytest.mark.parametrize("node", NODES, ids=str)
def test_routers_forward_and_every_node_filters_reverse_paths(node: str) -> None:
    values = sysctls(node, rp_filter=2)
    assert values["net/ipv4/conf/all/rp_filter"] == 2
    assert values["net/ipv6/conf/default/accept_dad"] == 0
    assert values.get("net/ipv4/ip_forward", 0) == (0 if node == "client" else 1)


def test_the_sysctl_script_stops_at_the_first_failure() -> None:
    script = sysctl_script({"net/ipv4/ip_forward": 1})
    assert script == "set -e\necho 1 > /proc/sys/net/ipv4/ip_forward\n"


def test_every_far_side_address_is_local_in_internet() -> None:
    routes = [ipaddress.ip_network(r.split()[3]) for r in far_side_routes()]
    for net in [n for c in LAB_COUNTRIES.values() for n in c] + list(LAB_UNPLACED):
        assert any(net.version == r.version and net.subnet_of(r) for r in routes), net  # type: ignore[arg-type]
    assert far_side_routes() == [r for r in addressing("internet") if "local" in r]


def test_the_client_routes_everything_to_the_entry() -> None:
    (_, entry4), (_, entry6) = CLIENT
    commands = addressing("client")
    assert commands[0] == "link set lo up"
    assert f"route add default via {entry4}" in commands
    assert f"route add default via {entry6}" in commands
    assert all(INGRESS not in c for c in commands) and any(CLIENT_LAN in c for c in commands)


def test_only_the_entry_has_the_ingress_and_only_routers_with_uplinks_masquerade() -> None:
    assert any(INGRESS in c for c in addressing("entry"))
    assert not any(INGRESS in c for name in EXIT_NAMES for c in addressing(name))
    assert [n for n in NODES if masquerades(n)] == ["entry", *EXIT_NAMES]


def test_veths_are_made_from_internet_and_the_entry_into_named_namespaces() -> None:
    made = veths({node: f"ns-{node}" for node in NODES})
    assert sorted(made) == ["entry", "internet"]
    assert len(made["internet"]) == 1 + len(EXIT_NAMES)
    assert made["entry"] == [f"link add {INGRESS} type veth peer name {CLIENT_LAN} netns ns-client"]


def test_only_the_exit_side_of_a_tunnel_routes_back_to_the_mesh() -> None:
    entry = tunnel_addressing("uk", "entry", "wg0")
    exit_side = tunnel_addressing("uk", "exit", "wx0")
    assert entry[0] == "link set wg0 addrgenmode none" and entry[-1] == "link set wg0 up"
    assert [c for c in exit_side if c.startswith("route")] == [
        f"route add {net} dev wx0" for net in MESH
    ]
    assert not any(c.startswith("route") for c in entry)
