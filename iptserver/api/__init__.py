"""The ways answers and questions come in from outside: the HTTP API (health, Prometheus
metrics, the running policy, the answers the PowerDNS Recursor plugin posts), the status
page, and the plugin's datagram endpoint.

    app.py          make_app: the route table, the middleware, the body limit
    config.py       ApiConfig: what the daemon hands the API
    http.py         JSON errors, the bearer token, reading a JSON body
    answers.py      the one AnswerRequest, its limits and checks (both ways in)
    posts.py        POST /v1/answers and /v1/reload
    views.py        the GET endpoints
    metrics.py      GET /metrics
    status_page.py  GET / and the page's files in status/
    plugin.py       the recursor plugin's datagram endpoint (UDP, the API's port)

Everything a client sends is checked before it reaches the learner; every HTTP error is
a JSON ``{"error": ...}`` with a 4xx/5xx status, every datagram error an ``ERR`` reply,
never a crash.
"""

from __future__ import annotations

from iptserver.api.app import make_app
from iptserver.api.config import ApiConfig
from iptserver.api.http import MAX_BODY
from iptserver.api.plugin import PluginEndpoint, start_plugin_endpoint

__all__ = ["MAX_BODY", "ApiConfig", "PluginEndpoint", "make_app", "start_plugin_endpoint"]
