"""What every request passes through (``iptserver/api/http.py``): JSON errors, the
body limit, the bearer token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from iptserver.api import MAX_BODY
from tests.api.harness import ANSWER, AUTH, TOKEN, Harness, error_of, serve


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
    assert h.reload_calls == 0 and h.learner.answers == 0


def test_right_token_case_insensitive_scheme_and_which_gets_need_it() -> None:
    """The GETs that show what clients resolved (a browsing log) need the token; health,
    metrics, the exits and the counts do not."""

    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        headers = {"Authorization": f"bearer {TOKEN}"}
        assert (await client.post("/v1/answers", json=ANSWER, headers=headers)).status == 200
        assert (await client.post("/v1/reload", headers=AUTH)).status == 200
        for path in ("/healthz", "/metrics", "/v1/exits", "/v1/status", "/"):
            assert (await client.get(path)).status == 200, path
        for path in ("/v1/routes", "/v1/decisions"):
            assert "Bearer" in await error_of(await client.get(path), 401), path
            assert (await client.get(path, headers=headers)).status == 200, path


@pytest.mark.parametrize(
    "value",
    ["Bearer s3crét", "Bearer \udcff\udcfe", "Bearer " + "x" * 5000, "Basic abc", "Bearer"],
    ids=["non-ascii", "raw-bytes", "long", "other-scheme", "empty"],
)
def test_a_bad_token_is_a_401_with_a_json_error(value: str) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        raw = value.encode("utf-8", "surrogateescape")
        for method, path in (("POST", "/v1/answers"), ("GET", "/v1/decisions")):
            status, body = await raw_request(client, method, path, raw)
            assert status == 401, (method, path, body)
            assert "Bearer" in json.loads(body)["error"]

    serve(scenario)

    serve(scenario)


def test_no_token_configured_needs_no_header() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        assert (await client.post("/v1/answers", json=ANSWER)).status == 200
        assert (await client.post("/v1/reload")).status == 200

    serve(scenario, token=None)


async def raw_request(
    client: TestClient[Any, Any], method: str, path: str, authorization: bytes
) -> tuple[int, bytes]:
    """A request written byte by byte (aiohttp's client sends no non-ASCII header)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    body = json.dumps(ANSWER).encode() if method == "POST" else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    )
    writer.write(head.encode() + b"Authorization: " + authorization + b"\r\n\r\n" + body)
    data = await reader.read()
    writer.close()
    status_line, _, rest = data.partition(b"\r\n\r\n")
    return int(status_line.split(b" ")[1]), rest
