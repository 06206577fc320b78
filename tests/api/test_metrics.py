"""``GET /metrics`` (``iptserver/api/metrics.py``): the daemon's counters at scrape time,
in a registry of the app's own."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.api.harness import ANSWER, AUTH, Harness, parse_metrics, serve


def test_metrics() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        h.counters.queries = 7
        h.counters.sink_errors = 2
        assert (await client.post("/v1/answers", json=ANSWER, headers=AUTH)).status == 200
        assert (await client.post("/v1/reload", headers=AUTH)).status == 200
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.content_type == "text/plain"
        samples = parse_metrics(await response.text())
        assert samples["iptserver_dns_queries_total"] == 7
        assert samples["iptserver_dns_sink_errors_total"] == 2
        assert samples["iptserver_answers_total"] == 1
        assert samples['iptserver_learned_ips_total{exit="uk"}'] == 2
        assert samples['iptserver_learned_ips_total{exit="ru"}'] == 0
        assert samples['iptserver_reloads_total{result="ok"}'] == 1
        assert samples['iptserver_reloads_total{result="rejected"}'] == 0
        assert samples["iptserver_decision_seconds_count"] == 1
        assert samples['iptserver_exits{interface="wg-uk",mark="256",name="uk",table="100"}'] == 1
        # a dedicated registry: nothing of the process's global one
        assert not any(name.startswith("python_gc") for name in samples)

    serve(scenario)
