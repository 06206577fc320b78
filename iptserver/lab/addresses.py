"""The lab's address plan. Documentation and benchmark ranges only (RFC 5737, 3849, 2544).

The lab's GeoIP database places these ranges in countries, so country rules can be
exercised without any real address.
"""

from __future__ import annotations

import ipaddress

from iptserver.schema.values import IPNetwork


def _nets(*texts: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


# Where the lab's far-side servers live, by the country the lab GeoIP database gives them.
LAB_COUNTRIES: dict[str, tuple[IPNetwork, ...]] = {
    "GB": _nets("198.51.100.0/26", "2001:db8:44::/48"),
    "RU": _nets("198.51.100.64/26", "2001:db8:7::/48"),
    "US": _nets("198.51.100.128/26", "2001:db8:1::/48"),
    "DE": _nets("198.51.100.192/26", "2001:db8:49::/48"),
}
# In no country: what only DNS or net rules (or the default) can route.
LAB_UNPLACED: tuple[IPNetwork, ...] = _nets("203.0.113.0/24", "2001:db8:ff::/48")


# -- the lab's topology ----------------------------------------------------------------
#
#   client ──(ingress veth)── entry ──wg── uk ─┐
#                               │ ├───wg── ru ─┼── internet (DNS authority, whoami servers)
#                               │ └───wg── us ─┘
#                               └──(uplink veth, the host gateway)──┘
#
# Every node reaches "internet" over its own uplink (a /30 from 198.18.0.0/15 and a /64
# from 2001:db8:e000::/40); the WireGuard tunnels run over those uplinks. Each exit and
# the entry masquerade with their uplink address, so the far side learns which way a
# connection came by the source address it sees.

EXIT_NAMES = ("uk", "ru", "us")
WG_PORT = 51820


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# node -> (node side, internet side) of its uplink, IPv4 and IPv6
UPLINKS = {
    "entry": (("198.18.0.1", "198.18.0.2"), ("2001:db8:e000::1", "2001:db8:e000::2")),
    "uk": (("198.18.1.1", "198.18.1.2"), ("2001:db8:e001::1", "2001:db8:e001::2")),
    "ru": (("198.18.2.1", "198.18.2.2"), ("2001:db8:e002::1", "2001:db8:e002::2")),
    "us": (("198.18.3.1", "198.18.3.2"), ("2001:db8:e003::1", "2001:db8:e003::2")),
}
UPLINK_PREFIX = (30, 64)
UPLINK = "uplink"  # the interface name of a node's veth to internet; internet's is up-NODE

# entry side, exit side of each tunnel
TUNNELS = {
    "uk": (("10.9.1.1", "10.9.1.2"), ("fd09:1::1", "fd09:1::2")),
    "ru": (("10.9.2.1", "10.9.2.2"), ("fd09:2::1", "fd09:2::2")),
    "us": (("10.9.3.1", "10.9.3.2"), ("fd09:3::1", "fd09:3::2")),
}
TUNNEL_PREFIX = (30, 64)

# the client's LAN: the entry's ingress interface
CLIENT = (("10.77.1.2", "10.77.1.1"), ("fd77:1::2", "fd77:1::1"))  # (client, entry)
CLIENT_PREFIX = (24, 64)
MESH = _nets("10.77.0.0/16", "fd77::/16")

# The source address the far side sees for each way out.
SEEN_AS = {
    _ip(UPLINKS[node][family][0]): ("direct" if node == "entry" else node)
    for node in UPLINKS
    for family in (0, 1)
}

DNS_AUTHORITY = (_ip("203.0.113.53"), _ip("2001:db8:ff::53"))
