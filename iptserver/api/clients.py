"""``/v1/clients``: list, add and remove the clients of the running WireGuard interface.

Always behind the token: an added client is a way into the VPN. Without a token set the
endpoints say so (403) rather than let anyone who reaches the port hand out keys.
"""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from iptserver.api.answers import BadRequest
from iptserver.api.config import CONFIG
from iptserver.api.http import authorize, error, json_body
from iptserver.daemon.onboarding import Onboarding
from iptserver.errors import DataplaneError, IptserverError
from iptserver.mesh.roster import RosterError


def _onboarding(request: web.Request) -> Onboarding:
    config = request.app[CONFIG]
    if config.token is None:
        raise web.HTTPForbidden(
            reason="clients are managed through the API only with a token "
            "(iptserver run --api-token-file FILE)"
        )
    authorize(request)
    if config.onboarding is None:
        raise web.HTTPNotFound(reason=config.no_onboarding)
    return config.onboarding


async def list_clients(request: web.Request) -> web.Response:
    """``[{name, address, public_key, source, endpoint, latest_handshake, rx_bytes,
    tx_bytes}]``: the schema's clients (source "schema"), then those added ("api")."""
    return web.json_response(await _onboarding(request).listing())


async def add_client(request: web.Request) -> web.Response:
    """``{"name": NAME, "public_key": KEY?}`` -> 201 ``{name, address, public_key,
    config, qr_png}``: the client's wg-quick config (its private key in it, and the QR
    code as base64 PNG, unless it sent its own public key)."""
    onboarding = _onboarding(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object: {"name": ..., "public_key": ...}')
    if unknown := set(body) - {"name", "public_key"}:
        raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
    name, public_key = body.get("name"), body.get("public_key")
    if not isinstance(name, str):
        raise BadRequest("name must be a string")
    if public_key is not None and not isinstance(public_key, str):
        raise BadRequest("public_key must be a string (or left out: the key is made here)")
    try:
        added = await onboarding.add(name, public_key)
    except RosterError as e:
        return error(e.status, str(e))
    except DataplaneError as e:
        return error(503, f"client {name!r} not added: {e}")
    except IptserverError as e:
        return error(500, f"client {name!r} not added: {e}")
    found: dict[str, Any] = {
        "name": added.client.name,
        "address": str(added.client.address),
        "public_key": added.client.public_key,
        "config": added.config,
        "qr_png": base64.b64encode(added.qr_png).decode() if added.qr_png else None,
    }
    return web.json_response(found, status=201)


async def remove_client(request: web.Request) -> web.Response:
    """-> ``{"removed": NAME}``; the peer is off the interface at once."""
    onboarding = _onboarding(request)
    name = request.match_info["name"]
    try:
        await onboarding.remove(name)
    except RosterError as e:
        return error(e.status, str(e))
    except DataplaneError as e:
        return error(503, f"client {name!r} not removed: {e}")
    except IptserverError as e:
        return error(500, str(e))
    return web.json_response({"removed": name})
