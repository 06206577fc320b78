"""The GET endpoints (``iptserver/api/views.py``) over real HTTP on 127.0.0.1, in front
of a real Learner and Policy (``harness.py``)."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from iptserver.cli import main
from iptserver.geoip import GeoIPDatabase
from tests.api.harness import AUTH, SCHEMA, Harness, error_of, serve


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
        assert await (await client.get("/v1/routes", headers=AUTH)).json() == [ru_net]
        await h.learner.learn(["www.example.com"], [ipaddress.ip_address("198.51.100.10")], 60)
        learned = {
            "kind": "learned",
            "net": "198.51.100.10/32",
            "exit": "uk",
            "weight": 0,
            "expires_in": 122,
            "rule": 0,
            "names": ["www.example.com"],
        }
        assert await (await client.get("/v1/routes", headers=AUTH)).json() == [learned, ru_net]
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
            assert (
                await (await client.get("/v1/routes", params=params, headers=AUTH)).json()
                == expected
            ), query

    serve(scenario)


def test_routes_name_the_answer_that_wrote_an_entry_long_after_it() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await h.learner.learn(["www.example.com"], [ipaddress.ip_address("198.51.100.10")], 60)
        for i in range(150):  # more than the recent decisions keep
            await h.learner.learn(["example.org"], [ipaddress.ip_address(f"192.0.2.{i}")], 60)
        learned = await (
            await client.get("/v1/routes", params={"kind": "learned"}, headers=AUTH)
        ).json()
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
        assert message in await error_of(
            await client.get("/v1/routes", params=params, headers=AUTH), 400
        )

    serve(scenario)


def test_routes_says_when_the_kernel_cannot_be_read() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        h.kernel.fail = True
        message = await error_of(await client.get("/v1/routes", headers=AUTH), 503)
        assert "cannot read the kernel's sets" in message

    serve(scenario)


def test_a_listing_that_breaks_off_leaves_the_json_unclosed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The status (200) is sent before the sets are read to the end: a reader must see
    that the list is cut, not take it for whole."""

    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await h.learner.learn(["www.example.com"], [ipaddress.ip_address("198.51.100.10")], 60)
        h.kernel.fail_midway = True
        response = await client.get("/v1/routes", headers=AUTH)
        assert response.status == 200
        body = await response.text()
        assert body.startswith('[{"kind": "learned"')
        with pytest.raises(ValueError):
            json.loads(body)

    with caplog.at_level("WARNING"):
        serve(scenario)
    assert any("broken off" in r.getMessage() for r in caplog.records)


def test_decisions_lists_recent_decisions_and_filters_by_exit() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        assert await (await client.get("/v1/decisions", headers=AUTH)).json() == []
        await h.learner.learn(["www.example.com"], [ipaddress.ip_address("198.51.100.10")], 60)
        await h.learner.learn(["other.org"], [ipaddress.ip_address("203.0.113.5")], 60)
        everything = await (await client.get("/v1/decisions", headers=AUTH)).json()
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
        uk = await (await client.get("/v1/decisions", params={"exit": "uk"}, headers=AUTH)).json()
        assert [r["ip"] for r in uk] == ["198.51.100.10"]
        assert (
            await (
                await client.get("/v1/decisions", params={"exit": "nowhere"}, headers=AUTH)
            ).json()
            == []
        )

    serve(scenario)


def test_decisions_keeps_the_last_hundred() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        for i in range(150):
            await h.learner.learn(["a.example.com"], [ipaddress.ip_address(f"198.51.100.{i}")], 60)
        routes = await (await client.get("/v1/decisions", headers=AUTH)).json()
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
