"""The app as a whole (``iptserver/api/app.py``): its route table, and how the daemon
starts it (the command line's flags, the token file)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from iptserver.cli import parser
from tests.api.harness import Harness, error_of, serve


def test_unknown_path_and_method_are_json() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await error_of(await client.get("/v2/nothing"), 404)
        response = await client.get("/v1/answers")
        await error_of(response, 405)
        assert "POST" in response.headers["Allow"]

    serve(scenario)


# the command line


def test_run_parses_api_flags() -> None:
    args = parser().parse_args(
        ["run", "--config", "s.yaml", "--api", "[::1]:8053", "--api-token-file", "/t"]
    )
    assert args.api == (ipaddress.ip_address("::1"), 8053)
    assert args.api_token_file == Path("/t")
    defaults = parser().parse_args(["run", "--config", "s.yaml"])
    assert defaults.api is None and defaults.api_token_file is None
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--config", "s.yaml", "--api", "localhost"])


# the daemon's wiring (no kernel: the learner is set by hand, as run() would)
