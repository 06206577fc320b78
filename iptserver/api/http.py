"""What every request passes through: JSON errors, the bearer token, the body limit."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from iptserver.api.answers import BadRequest
from iptserver.api.config import CONFIG

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # an answer is a few hundred bytes; bigger is a mistake or an attack


def error(status: int, message: str) -> web.Response:
    """The one shape of every error: ``{"error": message}``."""
    return web.json_response({"error": message}, status=status)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error a JSON body saying what is wrong (aiohttp's own are plain text)."""
    try:
        return await handler(request)
    except BadRequest as e:
        return error(400, str(e))
    except web.HTTPRequestEntityTooLarge:
        return error(413, f"the body is larger than {MAX_BODY} bytes")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "www-authenticate")}
        response = error(e.status, e.reason)
        response.headers.update(headers)
        return response
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error(500, "internal error (logged)")


def _same(given: str, token: str) -> bool:
    # aiohttp keeps a header's non-ASCII bytes as surrogates, which do not encode: a
    # token never has them.
    try:
        return hmac.compare_digest(given.encode(), token.encode())
    except UnicodeEncodeError:
        return False


def authorize(request: web.Request) -> None:
    """Raises 401 unless the request carries the configured bearer token (if any): the
    POST endpoints, and the GETs that show what clients resolved (a browsing log)."""
    token = request.app[CONFIG].token
    if token is None:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not _same(given.strip(), token):
        raise web.HTTPUnauthorized(
            reason="a valid 'Authorization: Bearer TOKEN' header is required",
            headers={"WWW-Authenticate": 'Bearer realm="iptserver"'},
        )


async def json_body(request: web.Request) -> Any:
    """The body as JSON, at most MAX_BODY bytes (413 past it, 400 when not JSON)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    raw = await request.read()  # raises 413 past client_max_size, even when chunked
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise BadRequest(f"the body is not JSON: {e}") from None
