"""The HTTP API over real HTTP on 127.0.0.1, in front of a real Router and Policy.

Only the kernel is replaced: the Batcher's ``apply`` records what it would program.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from iptserver.api import MAX_BODY, ApiConfig, make_app
from iptserver.cli import _parser, main
from iptserver.dataplane.ipset import Entry
from iptserver.dataplane.kernel import Learned
from iptserver.dataplane.plan import plan
from iptserver.dns.counters import DnsCounters
from iptserver.errors import DataplaneError
from iptserver.geoip import GeoIPDatabase
from iptserver.policy import Policy
from iptserver.router import Router, State
from iptserver.schema import parse_schema

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
    applied: list[Learned] = field(default_factory=list)

    async def apply(self, entries: list[Learned]) -> None:
        if self.fail:
            raise DataplaneError("ipset add learned-4 198.51.100.10: test failure")
        self.applied.extend(entries)

    async def installed(self) -> list[tuple[int, Entry]]:
        """What the kernel would hold (every rule here has weight 0)."""
        if self.fail:
            raise DataplaneError("cannot list ipset learned-4: test failure")
        return [(0, Entry(e.network, e.mark, e.timeout)) for e in self.applied]


@dataclass
class Harness:
    router: Router
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
    return Harness(Router(state, kernel.apply), kernel, DnsCounters(), {"ok": 0, "rejected": 0})


def serve(
    scenario: Callable[[TestClient[Any, Any], Harness], Awaitable[None]],
    *,
    token: str | None = TOKEN,
    reload: bool = True,
    geo: GeoIPDatabase | None = None,
) -> Harness:
    """Run ``scenario`` against the app on 127.0.0.1 (a random port)."""
    harness = make_harness(geo)

    async def main() -> None:
        config = ApiConfig(
            router=harness.router,
            counters=harness.counters,
            reload=harness.reload if reload else None,
            reloads=harness.reloads,
            geo=geo,
            token=token,
            installed=harness.kernel.installed,
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


# GET endpoints


def test_healthz() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        response = await client.get("/healthz")
        assert response.status == 200
        assert await response.json() == {"status": "ok"}

    serve(scenario)


def test_exits() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        response = await client.get("/v1/exits")
        assert response.status == 200
        assert await response.json() == [
            {
                "name": "uk",
                "interface": "wg-uk",
                "mark": 256,
                "table": 100,
                "route": "interface",
                "state": "up",  # no health: never down
                "via": "uk",
                "link": None,  # no kernel here
            },
            {
                "name": "ru",
                "interface": "wg-ru",
                "mark": 257,
                "table": 101,
                "route": "interface",
                "state": "up",
                "via": "ru",
                "link": None,
            },
            {
                "name": "direct",
                "interface": "_DEFAULT",
                "mark": 258,
                "table": 102,
                "route": "host-gateway",
                "state": "up",
                "via": "direct",
                "link": None,
            },
        ]

    serve(scenario)


def test_routes_lists_learned_entries_then_the_rules_nets() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        ru_net = {"kind": "net", "net": "203.0.113.0/24", "exit": "ru", "weight": 0, "rule": 1}
        assert await (await client.get("/v1/routes")).json() == [ru_net]
        await h.router.learn(["www.example.com"], [ipaddress.ip_address("198.51.100.10")], 60)
        learned = {
            "kind": "learned",
            "net": "198.51.100.10/32",
            "exit": "uk",
            "weight": 0,
            "expires_in": 122,
            "rule": 0,
            "names": ["www.example.com"],
        }
        assert await (await client.get("/v1/routes")).json() == [learned, ru_net]
        for query, expected in [
            ({"exit": "uk"}, [learned]),
            ({"kind": "net"}, [ru_net]),
            ({"kind": ["net", "learned"]}, [learned, ru_net]),
            ({"ip": "203.0.113.9"}, [ru_net]),
            ({"ip": "198.51.100.10"}, [learned]),
            ({"ip": "2001:db8::1"}, []),
            ({"exit": "nowhere"}, []),
        ]:
            params = [
                (k, v) for k, vs in query.items() for v in ([vs] if isinstance(vs, str) else vs)
            ]
            assert await (await client.get("/v1/routes", params=params)).json() == expected, query

    serve(scenario)


def test_routes_name_the_answer_that_wrote_an_entry_long_after_it() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await h.router.learn(["www.example.com"], [ipaddress.ip_address("198.51.100.10")], 60)
        for i in range(150):  # more than the recent decisions keep
            await h.router.learn(["example.org"], [ipaddress.ip_address(f"192.0.2.{i}")], 60)
        learned = await (await client.get("/v1/routes", params={"kind": "learned"})).json()
        assert [(r["net"], r["rule"], r["names"]) for r in learned] == [
            ("198.51.100.10/32", 0, ["www.example.com"])
        ]

    serve(scenario)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"kind": "static"}, "kind must be one of learned, net, country"),
        ({"ip": "198.51.100.300"}, "ip is not an IP address"),
    ],
)
def test_routes_rejects_bad_filters(params: dict[str, str], message: str) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        assert message in await error_of(await client.get("/v1/routes", params=params), 400)

    serve(scenario)


def test_routes_says_when_the_kernel_cannot_be_read() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        h.kernel.fail = True
        message = await error_of(await client.get("/v1/routes"), 503)
        assert "cannot read the kernel's sets" in message

    serve(scenario)


def test_decisions_lists_recent_decisions_and_filters_by_exit() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        assert await (await client.get("/v1/decisions")).json() == []
        await h.router.learn(["www.example.com"], [ipaddress.ip_address("198.51.100.10")], 60)
        await h.router.learn(["other.org"], [ipaddress.ip_address("203.0.113.5")], 60)
        everything = await (await client.get("/v1/decisions")).json()
        assert everything == [
            {
                "names": ["www.example.com"],
                "ip": "198.51.100.10",
                "exit": "uk",
                "rule": 0,
                "kind": "domain",
                "reason": "rule",
            },
            {
                "names": ["other.org"],
                "ip": "203.0.113.5",
                "exit": "ru",
                "rule": 1,
                "kind": "net",
                "reason": "rule",
            },
        ]
        uk = await (await client.get("/v1/decisions", params={"exit": "uk"})).json()
        assert [r["ip"] for r in uk] == ["198.51.100.10"]
        assert await (await client.get("/v1/decisions", params={"exit": "nowhere"})).json() == []

    serve(scenario)


def test_decisions_keeps_the_last_hundred() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        for i in range(150):
            await h.router.learn(["a.example.com"], [ipaddress.ip_address(f"198.51.100.{i}")], 60)
        routes = await (await client.get("/v1/decisions")).json()
        assert len(routes) == 100
        assert routes[-1]["ip"] == "198.51.100.149"

    serve(scenario)


def test_explain_matches_the_cli(tmp_path: Path, lab_mmdb: Path) -> None:
    queries = ["www.example.com", "203.0.113.7", "www.example.com,cdn.net=198.51.100.1"]
    path = tmp_path / "schema.yaml"
    path.write_text(SCHEMA, encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["explain", str(path), *queries, "--geoip", str(lab_mmdb), "--json"]) == 0
    expected = json.loads(out.getvalue())

    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        response = await client.get("/v1/explain", params=[("q", q) for q in queries])
        assert response.status == 200
        assert await response.json() == expected

    serve(scenario, geo=GeoIPDatabase(lab_mmdb))
    assert [r["exit"] for r in expected] == ["uk", "ru", "uk"]


def test_explain_errors() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        assert "query" in await error_of(await client.get("/v1/explain"), 400)
        message = await error_of(await client.get("/v1/explain", params={"q": "a=not-ip"}), 400)
        assert "not an IP address" in message
        await error_of(await client.get("/v1/explain", params={"q": " , "}), 400)
        many = [("q", "example.com")] * 100
        await error_of(await client.get("/v1/explain", params=many), 400)

    serve(scenario)


def test_unknown_path_and_method_are_json() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await error_of(await client.get("/v2/nothing"), 404)
        response = await client.get("/v1/answers")
        await error_of(response, 405)
        assert "POST" in response.headers["Allow"]

    serve(scenario)


# metrics


def parse_metrics(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        h.counters.queries = 7
        h.counters.sink_errors = 2
        assert (await client.post("/v1/answers", json=ANSWER, headers=AUTH)).status == 200
        assert (await client.post("/v1/reload", headers=AUTH)).status == 200
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.content_type == "text/plain"
        samples = parse_metrics(await response.text())
        assert samples["iptserver_dns_queries_total"] == 7
        assert samples["iptserver_dns_sink_errors_total"] == 2
        assert samples["iptserver_answers_total"] == 1
        assert samples['iptserver_learned_ips_total{exit="uk"}'] == 2
        assert samples['iptserver_learned_ips_total{exit="ru"}'] == 0
        assert samples['iptserver_reloads_total{result="ok"}'] == 1
        assert samples['iptserver_reloads_total{result="rejected"}'] == 0
        assert samples["iptserver_decision_seconds_count"] == 1
        assert samples['iptserver_exits{interface="wg-uk",mark="256",name="uk",table="100"}'] == 1
        # a dedicated registry: nothing of the process's global one
        assert not any(name.startswith("python_gc") for name in samples)

    serve(scenario)


# POST /v1/answers


def test_answer_is_routed_and_its_ttl_capped() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        response = await client.post("/v1/answers", json=ANSWER, headers=AUTH)
        assert response.status == 200
        assert await response.json() == {"ttl": 120}  # the rule's hold
        short = {**ANSWER, "ttl": 30, "chain": []}
        assert await (await client.post("/v1/answers", json=short, headers=AUTH)).json() == {
            "ttl": 30
        }
        unmatched = {"qname": "Other.ORG.", "addresses": ["192.0.2.1"], "ttl": 9000}
        response = await client.post("/v1/answers", json=unmatched, headers=AUTH)
        assert await response.json() == {"ttl": 300}  # the schema's hold

    h = serve(scenario)
    learned = {(str(e.network), e.mark, e.timeout) for e in h.kernel.applied}
    assert learned == {("198.51.100.10/32", 256, 122), ("2001:db8::1/128", 256, 122)}
    assert h.router.recent[-1][0] == ("other.org",)
    assert h.router.recent[0][0] == ("www.example.com", "cdn.example.net")


def test_answer_kernel_failure_is_503() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        h.kernel.fail = True
        response = await client.post("/v1/answers", json=ANSWER, headers=AUTH)
        assert "test failure" in await error_of(response, 503)
        h.kernel.fail = False
        assert (await client.post("/v1/answers", json=ANSWER, headers=AUTH)).status == 200

    serve(scenario)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([], "JSON object"),
        ("www.example.com", "JSON object"),
        (0, "JSON object"),
        ({**ANSWER, "extra": 1}, "unknown field"),
        ({"addresses": [], "ttl": 1}, "qname is required"),
        ({"qname": "a.com", "ttl": 1}, "addresses is required"),
        ({"qname": "a.com", "addresses": []}, "ttl is required"),
        ({**ANSWER, "qname": 5}, "qname must be a string"),
        ({**ANSWER, "qname": ""}, "not a DNS name"),
        ({**ANSWER, "qname": "."}, "not a DNS name"),
        ({**ANSWER, "qname": "a b.com"}, "not a DNS name"),
        ({**ANSWER, "qname": "a" * 300}, "not a DNS name"),
        ({**ANSWER, "chain": "cdn.example.net"}, "chain must be a list"),
        ({**ANSWER, "chain": [None]}, "chain[0] must be a string"),
        ({**ANSWER, "chain": ["x.net"] * 100}, "chain has more"),
        ({**ANSWER, "addresses": "198.51.100.10"}, "addresses must be a list"),
        ({**ANSWER, "addresses": {"ip": "198.51.100.10"}}, "addresses must be a list"),
        ({**ANSWER, "addresses": [3325256714]}, "addresses[0] must be a string"),
        ({**ANSWER, "addresses": ["198.51.100.10", "300.1.1.1"]}, "addresses[1] is not an IP"),
        ({**ANSWER, "addresses": ["198.51.100.0/24"]}, "not an IP"),
        ({**ANSWER, "addresses": [""]}, "not an IP"),
        ({**ANSWER, "addresses": ["192.0.2.1"] * 1000}, "more than"),
        ({**ANSWER, "ttl": -1}, "ttl must be"),
        ({**ANSWER, "ttl": 2**31}, "ttl must be"),
        ({**ANSWER, "ttl": 1.5}, "ttl must be"),
        ({**ANSWER, "ttl": "300"}, "ttl must be"),
        ({**ANSWER, "ttl": True}, "ttl must be"),
        ({**ANSWER, "ttl": None}, "ttl must be"),
    ],
)
def test_answer_bad_bodies_are_400(body: Any, expected: str) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        response = await client.post("/v1/answers", json=body, headers=AUTH)
        assert expected in await error_of(response, 400)

    h = serve(scenario)
    assert h.router.answers == 0 and h.kernel.applied == []


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"{'qname': 1}",
        b"\xff\xfe\x00garbage",
        b"[" * 50_000 + b"]" * 10,
        b'{"ttl": 1e999999, "qname": "a", "addresses": []}',
        b"NaN",
        b"null",
    ],
)
def test_answer_malformed_json_is_400(raw: bytes) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        response = await client.post(
            "/v1/answers", data=raw, headers={**AUTH, "Content-Type": "application/json"}
        )
        await error_of(response, 400)
        assert (await client.get("/healthz")).status == 200

    serve(scenario)


def test_answer_body_too_large_is_413() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        huge = {**ANSWER, "chain": ["x" * 1000] * (MAX_BODY // 1000 + 10)}
        response = await client.post("/v1/answers", json=huge, headers=AUTH)
        assert str(MAX_BODY) in await error_of(response, 413)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            for _ in range(200):
                yield b" " * 1024

        response = await client.post("/v1/answers", data=chunks(), headers=AUTH)
        await error_of(response, 413)
        assert (await client.post("/v1/answers", json=ANSWER, headers=AUTH)).status == 200

    serve(scenario)


# POST /v1/reload


def test_reload() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        response = await client.post("/v1/reload", headers=AUTH)
        assert response.status == 200
        assert await response.json() == {"reloaded": True}
        h.reload_results = [False]
        assert await (await client.post("/v1/reload", headers=AUTH)).json() == {"reloaded": False}

    h = serve(scenario)
    assert h.reload_calls == 2
    assert h.reloads == {"ok": 1, "rejected": 1}


def test_reload_unavailable_is_503() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await error_of(await client.post("/v1/reload"), 503)

    serve(scenario, token=None, reload=False)


# auth


@pytest.mark.parametrize("path", ["/v1/answers", "/v1/reload"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer ünïcode"},
    ],
)
def test_post_without_the_right_token_is_401(path: str, headers: dict[str, str]) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        response = await client.post(path, json=ANSWER, headers=headers)
        assert "Bearer" in await error_of(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

    h = serve(scenario)
    assert h.reload_calls == 0 and h.router.answers == 0


def test_right_token_case_insensitive_scheme_and_gets_need_none() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        headers = {"Authorization": f"bearer {TOKEN}"}
        assert (await client.post("/v1/answers", json=ANSWER, headers=headers)).status == 200
        assert (await client.post("/v1/reload", headers=AUTH)).status == 200
        for path in ("/healthz", "/metrics", "/v1/exits", "/v1/routes"):
            assert (await client.get(path)).status == 200, path

    serve(scenario)


def test_no_token_configured_needs_no_header() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        assert (await client.post("/v1/answers", json=ANSWER)).status == 200
        assert (await client.post("/v1/reload")).status == 200

    serve(scenario, token=None)


# the command line


def test_run_parses_api_flags() -> None:
    args = _parser().parse_args(
        ["run", "--config", "s.yaml", "--api", "[::1]:8053", "--api-token-file", "/t"]
    )
    assert args.api == (ipaddress.ip_address("::1"), 8053)
    assert args.api_token_file == Path("/t")
    defaults = _parser().parse_args(["run", "--config", "s.yaml"])
    assert defaults.api is None and defaults.api_token_file is None
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--config", "s.yaml", "--api", "localhost"])


# the daemon's wiring (no kernel: the router is set by hand, as run() would)


@dataclass
class FakeProxy:
    counters: DnsCounters = field(default_factory=DnsCounters)


def test_daemon_starts_the_api_with_its_token(tmp_path: Path) -> None:
    from aiohttp import ClientSession

    from iptserver.daemon import Daemon, Options
    from iptserver.errors import IptserverError

    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n", encoding="utf-8")
    loaded = parse_schema(SCHEMA, "api-test.yaml")
    state = State(Policy(loaded.schema), plan(loaded.schema, {}), loaded)

    async def main() -> None:
        endpoint = (ipaddress.ip_address("127.0.0.1"), 0)
        daemon = Daemon(
            Options(config=tmp_path / "s.yaml", api=endpoint, api_token_file=token_file)
        )
        daemon._router = Router(state, None)
        proxy: Any = FakeProxy()
        runner = await daemon._start_api(loaded.schema, proxy)
        assert runner is not None
        try:
            host, port = runner.addresses[0][:2]
            async with ClientSession(f"http://{host}:{port}") as session:
                assert (await session.get("/healthz")).status == 200
                assert (await session.post("/v1/answers", json=ANSWER)).status == 401
                response = await session.post("/v1/answers", json=ANSWER, headers=AUTH)
                assert await response.json() == {"ttl": 120}
        finally:
            await runner.cleanup()
        # neither --api nor api.listen: no API
        daemon = Daemon(Options(config=tmp_path / "s.yaml"))
        daemon._router = Router(state, None)
        assert await daemon._start_api(loaded.schema, proxy) is None
        for bad in ("", None):
            if bad is None:
                token_file.unlink()
            else:
                token_file.write_text(bad, encoding="utf-8")
            daemon = Daemon(
                Options(config=tmp_path / "s.yaml", api=endpoint, api_token_file=token_file)
            )
            daemon._router = Router(state, None)
            with pytest.raises(IptserverError, match="token"):
                await daemon._start_api(loaded.schema, proxy)

    asyncio.run(main())
