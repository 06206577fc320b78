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
