"""How the daemon serves its API: the token file, where it listens (or not at all), and
the plugin's datagrams on the API's port number over UDP, closed with it."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path

import aiohttp
import pytest

from iptserver.api import ApiConfig
from iptserver.daemon import Options
from iptserver.daemon.http import read_token, serve_api
from iptserver.dataplane.plan import plan
from iptserver.errors import IptserverError
from iptserver.learning import Learner, State
from iptserver.policy import Policy
from iptserver.schema import parse_schema
from tests.api.harness import ANSWER, AUTH, SCHEMA, TOKEN
from tests.api.test_plugin import ANSWER as DATAGRAM
from tests.api.test_plugin import Client

ENDPOINT = (ipaddress.ip_address("127.0.0.1"), 0)


def learner() -> Learner:
    loaded = parse_schema(SCHEMA, "api-test.yaml")
    return Learner(State(Policy(loaded.schema), plan(loaded.schema, {}), loaded), None)


def test_the_api_needs_the_token_from_its_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n", encoding="utf-8")
    config = ApiConfig(learner(), token=read_token(token_file))

    async def main() -> None:
        async with (
            serve_api(config, ENDPOINT) as port,
            aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session,
        ):
            assert (await session.get("/healthz")).status == 200
            assert (await session.post("/v1/answers", json=ANSWER)).status == 401
            response = await session.post("/v1/answers", json=ANSWER, headers=AUTH)
            assert await response.json() == {"ttl": 120}

    asyncio.run(main())


@pytest.mark.parametrize("content", ["", "  \n", None], ids=["empty", "blank", "missing"])
def test_an_unusable_token_file_is_an_error(tmp_path: Path, content: str | None) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content, encoding="utf-8")
    with pytest.raises(IptserverError, match="token"):
        read_token(token_file)


def test_no_api_unless_asked(tmp_path: Path) -> None:
    schema = parse_schema(SCHEMA, "api-test.yaml").schema
    assert read_token(None) is None
    assert Options(config=tmp_path / "s.yaml").api_endpoint(schema) is None
    assert Options(config=tmp_path / "s.yaml", api=ENDPOINT).api_endpoint(schema) == ENDPOINT


def test_the_plugin_datagrams_share_the_api_port_and_close_with_it() -> None:
    """``iptserver run --api ADDR:PORT`` serves the plugin's datagrams on UDP ADDR:PORT,
    and stops when the API does."""
    config = ApiConfig(learner())

    async def main() -> None:
        async with serve_api(config, ENDPOINT) as port:
            client = Client(port)
            assert await client.ask(DATAGRAM) == b"IPT1 7 120\n"
            bad_ttl = DATAGRAM.replace(b"IPT1 7 3600", b"IPT1 8 x")
            assert (await client.ask(bad_ttl) or b"").startswith(b"IPT1 8 ERR ttl must be")
            url = f"http://127.0.0.1:{port}/metrics"
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                metrics = await response.text()
            for line in [
                "iptserver_plugin_datagrams_total 2.0",
                "iptserver_plugin_rejected_total 1.0",
                "iptserver_plugin_failed_total 0.0",
            ]:
                assert line in metrics.splitlines(), metrics
        assert await client.ask(DATAGRAM, timeout=0.5) is None  # closed with the API
        client.sock.close()

    asyncio.run(main())


def test_a_port_in_use_is_an_error_that_names_it() -> None:
    async def main() -> None:
        async with serve_api(ApiConfig(learner()), ENDPOINT) as port:
            taken = (ENDPOINT[0], port)
            with pytest.raises(IptserverError, match=f"127.0.0.1:{port}"):
                async with serve_api(ApiConfig(learner()), taken):
                    pass

    asyncio.run(main())


def test_malformed_requests_are_one_throttled_warning_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A scanner's garbage: each gets a 400 with a JSON error (as every other error of
    the API), the log one line for the lot, no ERROR."""
    config = ApiConfig(learner(), token=TOKEN)
    garbage = [
        b"GARBAGE\r\n\r\n",
        b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"b" * 10000 + b"\r\n\r\n",
    ] * 10

    async def main() -> list[bytes]:
        replies = []
        async with serve_api(config, ENDPOINT) as port:
            for raw in garbage:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(raw)
                replies.append(await reader.read())
                writer.close()
        return replies

    with caplog.at_level("DEBUG"):
        replies = asyncio.run(main())
    for reply in replies:
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0], reply
        assert b"Content-Type: application/json" in head, reply
        assert set(json.loads(body)) == {"error"}, reply
    assert [r for r in caplog.records if r.levelno >= 40] == []
    warned = [r for r in caplog.records if r.levelno == 30 and "HTTP 400" in r.getMessage()]
    assert len(warned) == 1 and warned[0].exc_info is None, warned
