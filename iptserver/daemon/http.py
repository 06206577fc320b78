"""The daemon's HTTP API and, on the same port number over UDP, the recursor plugin's
datagram endpoint."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from iptserver.api import ApiConfig, PluginEndpoint, make_app, start_plugin_endpoint
from iptserver.dns.throttle import ThrottledLog
from iptserver.errors import IptserverError
from iptserver.schema.values import Endpoint, format_endpoint

log = logging.getLogger(__name__)


class MalformedRequests(logging.Filter):
    """aiohttp logs every request it cannot parse at ERROR with a traceback: one
    throttled WARNING line without it instead (a scanner would fill the log)."""

    def __init__(self) -> None:
        super().__init__()
        self._log = ThrottledLog(log)

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        reason = " ".join(str(error.message).split())[:200]
        self._log.warning("bad-http", "%s: HTTP %d, %s", record.getMessage(), error.code, reason)
        return False


class _JsonErrors(RequestHandler):
    """aiohttp answers a request it cannot parse (a bad request line, an oversized
    header) itself, in text/plain: the API's one error shape, ``{"error": ...}``,
    instead."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)
        reason = " ".join(str(message or HTTPStatus(plain.status).phrase).split())[:200]
        response = web.json_response({"error": reason}, status=plain.status)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrors(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app makes its Server (routing, request factory); only its connections'
        # handler class differs, so the instance takes the subclass.
        server.__class__ = _JsonErrorServer
        return server


def read_token(path: Path | None) -> str | None:
    """The bearer token the POST endpoints need (None: no file, no token)."""
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise IptserverError(f"cannot read the API token: {e}") from e
    if not token:
        raise IptserverError(f"the API token file {path} is empty")
    return token


@contextlib.asynccontextmanager
async def serve_api(config: ApiConfig, endpoint: Endpoint) -> AsyncIterator[int]:
    """Serve the API on ``endpoint`` until the block ends; yields the port bound (the
    endpoint's, or the one picked for port 0). Raises IptserverError."""
    address, port = endpoint
    if config.token is None and not address.is_loopback:
        log.warning("the HTTP API on %s has no token: anyone who reaches it can POST", address)
    plugin: PluginEndpoint | None = None
    config.plugin = lambda: plugin
    runner = _Runner(make_app(config), access_log=None)
    malformed = MalformedRequests()
    server_log = logging.getLogger("aiohttp.server")
    server_log.addFilter(malformed)
    await runner.setup()
    try:
        await web.TCPSite(runner, str(address), port).start()
        bound: int = runner.addresses[0][1]
        plugin = await start_plugin_endpoint(config.learner, address, bound, config.token)
    except OSError as e:
        await runner.cleanup()
        server_log.removeFilter(malformed)
        raise IptserverError(
            f"the HTTP API cannot listen on {format_endpoint(endpoint)}: {e}"
        ) from e
    log.info("HTTP API on %s", format_endpoint((address, bound)))
    try:
        yield bound
    finally:
        plugin.close()
        await runner.cleanup()
        server_log.removeFilter(malformed)
