"""``/v1/clients`` over real HTTP, with a real roster in a temporary state directory and
a clients interface that does not exist: everything up to the interface is checked here
(the token, the body, the roster's refusals, nothing left half-done); the interface
itself in tests/e2e/test_onboarding.py."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from iptserver.daemon.onboarding import Onboarding
from iptserver.mesh.topology import Clients, mesh_of
from iptserver.schema import parse_schema
from tests.api.harness import AUTH, Harness, error_of, serve

MISSING = f"wgnone{secrets.token_hex(2)}"


def onboarding(state: Path) -> Onboarding:
    text = f"""
exits: {{uk: {{interface: wg_uk}}}}
nodes:
  entry: {{entry: true, endpoint: 198.18.0.1}}
clients:
  node: entry
  interface: {MISSING}
  subnet: 10.77.2.0/24
  peers: {{phone: {{}}}}
"""
    clients: Clients | None = mesh_of(parse_schema(text, "c.yaml").schema).clients
    assert clients is not None
    return Onboarding(clients, state)


def test_the_token_is_required_and_without_one_clients_are_not_managed(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await error_of(await client.get("/v1/clients"), 401)
        await error_of(await client.post("/v1/clients", json={"name": "x"}), 401)
        await error_of(await client.delete("/v1/clients/x"), 401)

    serve(scenario, onboarding=onboarding(tmp_path))

    async def open_api(client: TestClient[Any, Any], h: Harness) -> None:
        message = await error_of(await client.post("/v1/clients", json={"name": "x"}), 403)
        assert "--api-token-file" in message

    serve(open_api, token=None, onboarding=onboarding(tmp_path))


def test_no_clients_section_is_a_404_that_says_why(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        message = await error_of(await client.get("/v1/clients", headers=AUTH), 404)
        assert "clients" in message

    serve(scenario)


def test_bad_requests_and_a_refusing_interface_leave_nothing_behind(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        for body, status, says in [
            ([1], 400, "JSON object"),
            ({"name": 1}, 400, "name must be a string"),
            ({"name": "a", "public_key": 5}, 400, "public_key must be a string"),
            ({"name": "phone"}, 409, "in the schema"),
            ({"name": "a b"}, 400, "client name"),
        ]:
            response = await client.post("/v1/clients", json=body, headers=AUTH)
            assert says in await error_of(response, status), body
        response = await client.post("/v1/clients", json={"name": "tab"}, headers=AUTH)
        assert MISSING in await error_of(response, 503)
        listed = await (await client.get("/v1/clients", headers=AUTH)).json()
        assert [(c["name"], c["source"], c["latest_handshake"]) for c in listed] == [
            ("phone", "schema", None)
        ]
        await error_of(await client.delete("/v1/clients/tab", headers=AUTH), 404)
        await error_of(await client.delete("/v1/clients/phone", headers=AUTH), 409)

    serve(scenario, onboarding=onboarding(tmp_path))
    assert not (tmp_path / "clients.json").exists()
    assert not (tmp_path / "keys" / "clients" / "tab.key").exists()


def test_a_client_of_an_interface_that_is_gone_can_still_be_removed(tmp_path: Path) -> None:
    """Nothing to take it off (the interface went with its container): the roster entry,
    which would put it back, goes, and so does its key."""
    key = base64.b64encode(bytes(range(32))).decode()
    (tmp_path / "clients.json").write_text(
        json.dumps(
            [{"name": "old", "address": "10.77.2.254", "public_key": key, "keyed_here": True}]
        )
    )
    (tmp_path / "keys" / "clients").mkdir(parents=True)
    (tmp_path / "keys" / "clients" / "old.key").write_text("x")

    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        response = await client.delete("/v1/clients/old", headers=AUTH)
        assert await response.json() == {"removed": "old"}
        listed = await (await client.get("/v1/clients", headers=AUTH)).json()
        assert [c["name"] for c in listed] == ["phone"]

    serve(scenario, onboarding=onboarding(tmp_path))
    assert json.loads((tmp_path / "clients.json").read_text()) == []
    assert not (tmp_path / "keys" / "clients" / "old.key").exists()
