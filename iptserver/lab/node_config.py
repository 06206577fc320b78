"""What each lab node is given: its sysctls and its ``ip`` commands, from the address plan.

Pure functions (no namespace, no root), so the lab's wiring can be read and tested on
its own; ``topology.Lab`` runs what they return.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from iptserver.lab.addresses import (
    CLIENT,
    CLIENT_PREFIX,
    EXIT_NAMES,
    LAB_COUNTRIES,
    LAB_UNPLACED,
    MESH,
    TUNNEL_PREFIX,
    TUNNELS,
    UPLINK,
    UPLINK_PREFIX,
    UPLINKS,
)

FORWARDERS = frozenset({"entry", *EXIT_NAMES, "internet"})
INGRESS = "clients"  # entry's veth to the client (stands in for wg-clients)
CLIENT_LAN = "lan"  # the client's side of it


def sysctls(node: str, rp_filter: int) -> dict[str, int]:
    """``/proc/sys`` values for a node's new namespace; routers (``FORWARDERS``) forward."""
    values = {
        # Addresses are usable at once: no 1-2 s of duplicate address detection.
        "net/ipv6/conf/all/accept_dad": 0,
        "net/ipv6/conf/default/accept_dad": 0,
        "net/ipv4/conf/all/rp_filter": rp_filter,
        "net/ipv4/conf/default/rp_filter": rp_filter,
    }
    if node in FORWARDERS:  # Fact: a new namespace starts with forwarding off.
        values |= {
            "net/ipv4/ip_forward": 1,
            "net/ipv6/conf/all/forwarding": 1,
            "net/ipv6/conf/default/forwarding": 1,
        }
    return values


def sysctl_script(values: dict[str, int]) -> str:
    """A ``sh`` script writing ``values``, stopping at the first failure."""
    return "set -e\n" + "".join(f"echo {v} > /proc/sys/{k}\n" for k, v in values.items())


def far_side_routes() -> list[str]:
    """AnyIP: every lab server address is local in internet, served by one socket each."""
    nets = [n for country in LAB_COUNTRIES.values() for n in country] + list(LAB_UNPLACED)
    collapsed = [
        *ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv4Network)),
        *ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv6Network)),
    ]
    return [f"route add local {net} dev lo" for net in collapsed]


def veths(ns: dict[str, str]) -> dict[str, list[str]]:
    """node -> the ``ip`` commands making its veths, the far end in another namespace
    (``ns``: node -> namespace name); made inside the lab, never in the root namespace."""
    return {
        "internet": [
            f"link add up-{node} type veth peer name {UPLINK} netns {ns[node]}" for node in UPLINKS
        ],
        "entry": [f"link add {INGRESS} type veth peer name {CLIENT_LAN} netns {ns['client']}"],
    }


def _internet() -> list[str]:
    commands = []
    for peer, ((_, v4), (_, v6)) in UPLINKS.items():
        commands += [
            f"link set up-{peer} up",
            f"addr add {v4}/{UPLINK_PREFIX[0]} dev up-{peer}",
            f"addr add {v6}/{UPLINK_PREFIX[1]} dev up-{peer} nodad",
        ]
    return commands + far_side_routes()


def _client() -> list[str]:
    (client4, entry4), (client6, entry6) = CLIENT
    return [
        f"link set {CLIENT_LAN} up",
        f"addr add {client4}/{CLIENT_PREFIX[0]} dev {CLIENT_LAN}",
        f"addr add {client6}/{CLIENT_PREFIX[1]} dev {CLIENT_LAN} nodad",
        f"route add default via {entry4}",
        f"route add default via {entry6}",
    ]


def _uplinked(node: str) -> list[str]:
    (mine4, gw4), (mine6, gw6) = UPLINKS[node]
    commands = [
        f"link set {UPLINK} up",
        f"addr add {mine4}/{UPLINK_PREFIX[0]} dev {UPLINK}",
        f"addr add {mine6}/{UPLINK_PREFIX[1]} dev {UPLINK} nodad",
        f"route add default via {gw4}",
        f"route add default via {gw6}",
    ]
    if node == "entry":
        (_, entry4), (_, entry6) = CLIENT
        commands += [
            f"link set {INGRESS} up",
            f"addr add {entry4}/{CLIENT_PREFIX[0]} dev {INGRESS}",
            f"addr add {entry6}/{CLIENT_PREFIX[1]} dev {INGRESS} nodad",
        ]
    return commands


def addressing(node: str) -> list[str]:
    """The ``ip`` commands that bring a node's links up, with addresses and routes."""
    if node == "internet":
        return ["link set lo up", *_internet()]
    if node == "client":
        return ["link set lo up", *_client()]
    return ["link set lo up", *_uplinked(node)]


def masquerades(node: str) -> bool:
    """Entry and exits masquerade with their uplink address: how the far side tells the
    ways apart (``addresses.SEEN_AS``)."""
    return node == "entry" or node in EXIT_NAMES


def tunnel_addressing(exit_name: str, side: Literal["entry", "exit"], iface: str) -> list[str]:
    """The ``ip`` commands giving one end of an exit's tunnel its addresses."""
    (entry4, exit4), (entry6, exit6) = TUNNELS[exit_name]
    mine4, mine6 = (entry4, entry6) if side == "entry" else (exit4, exit6)
    commands = [
        # No kernel-made (random) link-local address: a tunnel made anew
        # (make_tunnel) leaves the entry's kernel state as it was.
        f"link set {iface} addrgenmode none",
        f"addr add {mine4}/{TUNNEL_PREFIX[0]} dev {iface}",
        f"addr add {mine6}/{TUNNEL_PREFIX[1]} dev {iface} nodad",
        f"link set {iface} up",
    ]
    if side == "exit":  # the way back to the clients and the mesh
        commands += [f"route add {net} dev {iface}" for net in MESH]
    return commands
