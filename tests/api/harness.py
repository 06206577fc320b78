"""The HTTP API's test harness: the app on 127.0.0.1 in front of a real Learner and
Policy. Only the kernel is replaced: the Batcher's ``apply`` records what it would
program. The datagram endpoint's tests use the same one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from iptserver.api import ApiConfig, make_app
from iptserver.daemon.onboarding import Onboarding
from iptserver.dataplane.listing import RouteLine, route_json
from iptserver.dataplane.plan import LearnedEntry, plan
from iptserver.dns.counters import DnsCounters
from iptserver.errors import DataplaneError
from iptserver.geoip import GeoIPDatabase
from iptserver.learning import Learner, State
from iptserver.policy import Policy
from iptserver.schema import parse_schema
from iptserver.schema.values import IPAddress

SCHEMA = """\
exits:
  uk: {interface: wg-uk}
  ru: {interface: wg-ru}
  direct: {interface: _DEFAULT}
default: direct
rules:
  - exit: uk
    domains: [example.com]
    hold: 120
  - exit: ru
    nets: [203.0.113.0/24]
ttl: {hold: 300}
"""
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ANSWER = {
    "qname": "www.example.com",
    "chain": ["cdn.example.net"],
    "addresses": ["198.51.100.10", "2001:db8::1"],
    "ttl": 3600,
}


@dataclass
class Kernel:
    """The Batcher's ``apply``: records entries, or fails like a refusing kernel."""

    fail: bool = False
    fail_midway: bool = False  # the listing breaks off after its first batch
    applied: list[LearnedEntry] = field(default_factory=list)

    async def apply(self, entries: list[LearnedEntry]) -> None:
        if self.fail:
            raise DataplaneError("ipset add learned-4 198.51.100.10: test failure")
        self.applied.extend(entries)

    async def installed(
        self, ip: IPAddress | None, marks: Collection[int] | None
    ) -> AsyncIterator[list[RouteLine]]:
        """What the kernel would hold (every rule here has weight 0), one per batch."""
        if self.fail:
            raise DataplaneError("cannot list ipset learned-4: test failure")
        exits = {0x100: "uk", 0x101: "ru", 0x102: "direct"}
        for e in self.applied:
            if (ip is None or ip in e.network) and (marks is None or e.mark in marks):
                address = e.network.network_address
                start = route_json(0, str(e.network), exits.get(e.mark), e.timeout)
                yield [RouteLine(e.set_name, address.version, int(address), start.encode())]
                if self.fail_midway:
                    raise DataplaneError("cannot list ipset learned-4: broke off")


@dataclass
class Harness:
    learner: Learner
    kernel: Kernel
    counters: DnsCounters
    reloads: dict[str, int]
    reload_results: list[bool] = field(default_factory=lambda: [True])
    reload_calls: int = 0

    async def reload(self) -> bool:
        self.reload_calls += 1
        result = self.reload_results[(self.reload_calls - 1) % len(self.reload_results)]
        self.reloads["ok" if result else "rejected"] += 1
        return result


def make_harness(geo: GeoIPDatabase | None = None) -> Harness:
    loaded = parse_schema(SCHEMA, "api-test.yaml")
    state = State(Policy(loaded.schema, geo), plan(loaded.schema, {}), loaded)
    kernel = Kernel()
    return Harness(Learner(state, kernel.apply), kernel, DnsCounters(), {"ok": 0, "rejected": 0})


def serve(
    scenario: Callable[[TestClient[Any, Any], Harness], Awaitable[None]],
    *,
    token: str | None = TOKEN,
    reload: bool = True,
    geo: GeoIPDatabase | None = None,
    onboarding: Onboarding | None = None,
) -> Harness:
    """Run ``scenario`` against the app on 127.0.0.1 (a random port)."""
    harness = make_harness(geo)

    async def main() -> None:
        config = ApiConfig(
            learner=harness.learner,
            counters=harness.counters,
            reload=harness.reload if reload else None,
            reloads=harness.reloads,
            geo=geo,
            token=token,
            installed=harness.kernel.installed,
            onboarding=onboarding,
        )
        server = TestServer(make_app(config), host="127.0.0.1", port=0)
        async with TestClient(server) as client:
            await scenario(client, harness)

    asyncio.run(main())
    return harness


async def error_of(response: ClientResponse, status: int) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    message: str = body["error"]
    assert message
    return message


def parse_metrics(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


# the daemon's wiring (no kernel: the learner is set by hand, as run() would)


@dataclass
class FakeProxy:
    counters: DnsCounters = field(default_factory=DnsCounters)
