"""The aiohttp application: every route in one table, the JSON-errors middleware, the
body limit."""

from __future__ import annotations

from aiohttp import web

from iptserver.api.clients import add_client, list_clients, remove_client
from iptserver.api.config import CONFIG, ApiConfig
from iptserver.api.http import MAX_BODY, json_errors
from iptserver.api.metrics import install_metrics, metrics
from iptserver.api.posts import post_answer, post_reload
from iptserver.api.status_page import status_file, status_page
from iptserver.api.views import decisions, exits, explain_view, healthz, routes, status


def make_app(config: ApiConfig) -> web.Application:
    """The API over ``config``; bodies past MAX_BODY are refused with 413."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors])
    app[CONFIG] = config
    install_metrics(app, config)
    app.add_routes(
        [
            web.get("/", status_page),
            web.get("/status/{file}", status_file),
            web.get("/healthz", healthz),
            web.get("/metrics", metrics),
            web.get("/v1/exits", exits),
            web.get("/v1/routes", routes),
            web.get("/v1/decisions", decisions),
            web.get("/v1/status", status),
            web.get("/v1/explain", explain_view),
            web.post("/v1/answers", post_answer),
            web.post("/v1/reload", post_reload),
            web.get("/v1/clients", list_clients),
            web.post("/v1/clients", add_client),
            web.delete("/v1/clients/{name}", remove_client),
        ]
    )
    return app
