"""Who may ask the proxy, and how fast.

An address outside the allowed networks (loopback always is) is not a client: it gets
REFUSED, so the proxy is never an open resolver and an outsider never writes a route. A
client, and its /24 (IPv4) or /56 (IPv6) together, each have a token bucket: past its
rate a query is dropped (a reply would feed a flood with a spoofed source), so one client
cannot starve the others. Every table here is bounded.

Pure: the caller passes the time (seconds, any monotonic clock).
"""

from __future__ import annotations

import enum
import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from iptserver.schema.values import IPNetwork

MAX_CLIENTS = 65536  # addresses (and networks) remembered; past it the idle are forgotten
MAX_COUNTED = 1000  # clients counted by name in ``limited``; the rest as OTHERS
OTHERS = "others"
_V6_NETWORK = 1 << 128  # keeps /56 keys apart from /24 keys


class Verdict(enum.Enum):
    ALLOW = "allow"
    REFUSE = "refuse"  # not a client
    LIMIT = "limit"  # a client over its rate


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Queries per second per client address and per /24 or /56 (0: no limit); a bucket
    holds ``burst`` seconds of its rate, so a client may send that much at once."""

    client: float = 0.0
    network: float = 0.0
    burst: float = 2.0


class ClientGate:
    """``check(address, now)`` for every query, before anything else is done with it."""

    def __init__(
        self,
        allow: Iterable[IPNetwork] = (),
        rate: RateLimit = RateLimit(),
        on_stranger: Callable[[], None] | None = None,
    ) -> None:
        self.allow = tuple(allow)
        self.rate = rate
        # Called when an address not seen before is refused: the networks may have grown
        # (an ingress interface that came up after start), see ``allow_also``.
        self.on_stranger = on_stranger
        # address text -> (a client?, its network's key)
        self._known: dict[str, tuple[bool, int]] = {}
        self._clients = _Buckets(rate.client, rate.burst)
        self._networks = _Buckets(rate.network, rate.burst)
        self.limited: Counter[str] = Counter()  # queries dropped over the rate, by client

    def check(self, address: str, now: float) -> Verdict:
        known = self._known.get(address)
        if known is None:
            known = self._learn(address)
        allowed, network = known
        if not allowed:
            return Verdict.REFUSE
        if self._clients.take(address, now) and self._networks.take(network, now):
            return Verdict.ALLOW
        if address in self.limited or len(self.limited) < MAX_COUNTED:
            self.limited[address] += 1
        else:
            self.limited[OTHERS] += 1
        return Verdict.LIMIT

    def allow_also(self, networks: Iterable[IPNetwork]) -> None:
        """Let in ``networks`` too (addresses refused before are looked at again)."""
        self.allow = tuple(dict.fromkeys((*self.allow, *networks)))
        self._known = {a: known for a, known in self._known.items() if known[0]}

    def _learn(self, address: str) -> tuple[bool, int]:
        if len(self._known) >= MAX_CLIENTS:
            self._known.clear()
        try:  # a link-local IPv6 source comes with its zone: fe80::1%eth0
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            known = (False, 0)
        else:
            allowed = ip.is_loopback or any(ip in net for net in self.allow)
            network = int(ip) >> 8 if ip.version == 4 else _V6_NETWORK | int(ip) >> 72
            known = (allowed, network)
        self._known[address] = known
        if not known[0] and self.on_stranger is not None:
            self.on_stranger()
        return known


class _Buckets:
    """Token buckets by key: ``rate`` tokens a second, at most ``rate * burst`` held."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.size = max(1.0, rate * burst)
        self._held: dict[str | int, list[float]] = {}  # key -> [tokens, when counted]

    def take(self, key: str | int, now: float) -> bool:
        if not self.rate:
            return True
        bucket = self._held.get(key)
        if bucket is None:
            if len(self._held) >= MAX_CLIENTS:
                self._forget_idle(now)
            self._held[key] = [self.size - 1, now]
            return True
        tokens = min(self.size, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1
        return True

    def _forget_idle(self, now: float) -> None:
        """Forget the buckets that are full again (their clients went quiet); when all
        are busy, all: a new client must not wait for a slot."""
        full = self.size
        busy = {
            key: bucket
            for key, bucket in self._held.items()
            if bucket[0] + (now - bucket[1]) * self.rate < full
        }
        self._held = busy if len(busy) < MAX_CLIENTS else {}
