"""The lab's DNS data: what the lab authority (``iptserver.lab.authority``) answers.

Plain Python data so tests can read the expected answers from the same place the server
serves them from. Every address is in a lab range (``addresses.py``), so the lab GeoIP
database places it: 198.51.100.0/26 GB, .64/26 RU, .128/26 US, .192/26 DE; 203.0.113.0/24
and 2001:db8:ff::/48 in no country.

Names are lower case without the trailing dot. The authority stands in for the whole DNS
(it plays the recursor the entry forwards to), so it answers for every name: what is not
here is NXDOMAIN, a name that only has names under it (``chain.test``) is NODATA.

Besides ``ZONE``, one synthetic zone (``synthetic``): every name under ``bench.ru`` has
one A record (one of 50), and every name under ``fresh.bench.ru`` one AAAA record of its
own, so a benchmark can ask an endless supply of names no cache has seen.
"""

from __future__ import annotations

import hashlib
import ipaddress
import zlib
from typing import NamedTuple

DEFAULT_TTL = 60
NEGATIVE_TTL = 30  # the SOA minimum: how long a resolver may cache NXDOMAIN / NODATA


class Record(NamedTuple):
    type: str  # "A", "AAAA" or "CNAME"
    value: str  # an address, or the CNAME target (no trailing dot)
    ttl: int = DEFAULT_TTL


def _a(*values: str, ttl: int = DEFAULT_TTL) -> tuple[Record, ...]:
    return tuple(Record("A", v, ttl) for v in values)


def _aaaa(*values: str, ttl: int = DEFAULT_TTL) -> tuple[Record, ...]:
    return tuple(Record("AAAA", v, ttl) for v in values)


def _cname(target: str, ttl: int = DEFAULT_TTL) -> tuple[Record, ...]:
    return (Record("CNAME", target, ttl),)


ZONE: dict[str, tuple[Record, ...]] = {
    # GB
    "www.bbc.co.uk": _a("198.51.100.10"),
    "updates.example.org": _a("198.51.100.11"),
    # RU
    "mail.ru": _a("198.51.100.70") + _aaaa("2001:db8:7::70"),
    "multi.ru": _a("198.51.100.72", "198.51.100.140"),  # one RU address, one US
    # US
    "www.example.com": _a("198.51.100.150"),
    "ipv6only.example.com": _aaaa("2001:db8:1::80"),
    # DE (a country no exit serves)
    "de.example.de": _a("198.51.100.200"),
    # unplaced: only names, nets or the default can route these
    "cdn.example.net": _cname("edge.yandex.net"),
    "edge.yandex.net": _a("203.0.113.40"),
    "news.gov.uk": _a("203.0.113.60") + _aaaa("2001:db8:ff:1::60"),
    "short.example.org": _a("203.0.113.70", ttl=2),
    "long.example.org": _a("203.0.113.71", ttl=86400),
    # 40 answers: too big for 512 bytes of UDP, so a query without EDNS gets TC
    "big.example.org": _a(*(f"203.0.113.{n}" for n in range(100, 140))),
    "a.chain.test": _cname("b.chain.test"),
    "b.chain.test": _cname("c.chain.ru"),
    "c.chain.ru": _a("203.0.113.80"),
    "dangling.example.org": _cname("nowhere.example.org"),  # CNAME to NXDOMAIN
    # One name, rules of two exits: a ``ru`` domain rule and one naming it exactly.
    "shop.ru": _a("203.0.113.74") + _aaaa("2001:db8:ff::74"),
    # A .co.uk name on an address GeoIP places in RU: a domain rule against a country rule.
    "ru-hosted.co.uk": _a("198.51.100.80") + _aaaa("2001:db8:7::80"),
    # .ru names answering private and mesh addresses: a ru rule matches them, yet they are
    # never diverted (mixed.ru has one public address, which is).
    "printer.ru": _a("10.77.1.50") + _aaaa("fd77:1::50"),
    "router.ru": _a("192.168.1.1"),
    "cgnat.ru": _a("100.64.0.1"),
    "linklocal.ru": _a("169.254.1.1") + _aaaa("fe80::1"),
    "mixed.ru": _a("10.77.1.51", "203.0.113.79"),
    # The canary Firefox asks before it turns DNS over HTTPS on; the proxy NXDOMAINs it.
    "use-application-dns.net": _a("203.0.113.90"),
}

# The synthetic zone: any name under BENCH_ZONE (a wildcard, ``*.bench.ru``) answers one A
# record in 203.0.113.200-249 (no country), derived from the name so answers are stable:
# 50 addresses, which repeat the way popular (CDN) addresses do. Names under FRESH_ZONE
# instead answer one AAAA record in FRESH_NET (no country, reached through the lab as all
# of 2001:db8:ff::/48), derived from the name: in effect, a new address per name. Names
# under CHURN_ZONE answer one A record in CHURN_NET (RFC 2544's benchmarking range, not
# reachable in the lab), 65,536 addresses: a thousand names are nearly a thousand routes.
BENCH_ZONE = "bench.ru"
BENCH_FIRST, BENCH_COUNT = 200, 50
FRESH_ZONE = "fresh." + BENCH_ZONE
FRESH_NET = "2001:db8:ff:be00::/56"
CHURN_ZONE = "churn." + BENCH_ZONE
CHURN_NET = "198.19.0.0/16"


def synthetic(name: str) -> tuple[Record, ...]:
    """The records of ``name`` (lower case, no trailing dot) in the synthetic zone; ()
    for names outside it (and for ``bench.ru`` and ``fresh.bench.ru`` themselves, which
    have only names under them)."""
    if name.endswith("." + FRESH_ZONE):
        net = ipaddress.IPv6Network(FRESH_NET)
        digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
        host = int.from_bytes(digest, "big") % net.num_addresses
        return _aaaa(str(net.network_address + host))
    if name.endswith("." + CHURN_ZONE):
        churn = ipaddress.IPv4Network(CHURN_NET)
        return _a(str(churn.network_address + zlib.crc32(name.encode()) % churn.num_addresses))
    if not name.endswith("." + BENCH_ZONE) or name in (FRESH_ZONE, CHURN_ZONE):
        return ()
    host = BENCH_FIRST + zlib.crc32(name.encode()) % BENCH_COUNT
    return _a(f"203.0.113.{host}")


def distinct_names(zone: str, count: int, label: str = "n") -> dict[str, str]:
    """``count`` names under ``zone`` of the synthetic zone whose A records all differ:
    address -> name (``label0.zone``, ``label1.zone``... skipping repeats)."""
    found: dict[str, str] = {}
    n = 0
    while len(found) < count:
        name = f"{label}{n}.{zone}"
        (record,) = synthetic(name)
        found.setdefault(record.value, name)
        n += 1
    return found
