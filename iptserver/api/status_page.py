"""The human status page at ``/``: static files in ``status/``, served as they are.

The page is HTML, CSS and JS that fetch the JSON endpoints; nothing is rendered here.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

# The files the page is made of, with their content types.
STATUS_FILES = {
    "index.html": "text/html",
    "status.css": "text/css",
    "status.js": "text/javascript",
}
# The page loads its own files and calls this API, nothing else.
STATUS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def _status_response(name: str) -> web.Response:
    """One of the status page's files, read from the package."""
    body = resources.files("iptserver.api").joinpath("status", name).read_bytes()
    response = web.Response(body=body, content_type=STATUS_FILES[name], charset="utf-8")
    response.headers["Content-Security-Policy"] = STATUS_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-cache"
    return response


async def status_page(request: web.Request) -> web.Response:
    """The human status page (HTML that fetches the JSON endpoints)."""
    return _status_response("index.html")


async def status_file(request: web.Request) -> web.Response:
    """The page's CSS and JS; any other name is a 404."""
    name = request.match_info["file"]
    if name not in STATUS_FILES or name == "index.html":
        raise web.HTTPNotFound(reason=f"no status file {name!r}")
    return _status_response(name)
