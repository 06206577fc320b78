"""Exit health in the API and on the status page: a down exit shows where its traffic goes.

The monitor runs in the app's loop with a scripted probe (every round of uk fails, ru is
not watched) and a dataplane stand-in; the real probe and routes are tested in the lab.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from iptserver.api import ApiConfig
from iptserver.dataplane.plan import plan
from iptserver.health.monitor import Monitor
from iptserver.health.probe import RoundResult
from iptserver.learning import Learner, State
from iptserver.policy import Policy
from iptserver.schema import parse_schema
from iptserver.schema.health import Health
from tests.api.test_status_page import _discard, _rendered, _rows, _section, _start, _stop

SCHEMA = """\
exits:
  uk:
    interface: wg-uk
    on_down: [ru]
    health: {probe: ['198.51.100.80:80'], interval: 0.02, timeout: 0.02}
  ru: {interface: wg-ru}
  de:
    interface: wg-de
    health: {probe: ['198.51.100.200:80'], interval: 0.02, timeout: 0.02}
rules: []
"""


async def _dead(interface: str, health: Health) -> RoundResult:
    """uk and de are dead: every probe times out."""
    return RoundResult(ok=False, probe_error="timed out")


async def _routes(routed_by: dict[str, str | None]) -> list[str]:
    return []


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response) if "/v1/" in url else response.read().decode()


def test_down_exits_show_their_failover_or_block(tmp_path: Path) -> None:
    loaded = parse_schema(SCHEMA, "health-test.yaml")
    state = State(Policy(loaded.schema), plan(loaded.schema, {}), loaded)
    monitor = Monitor(loaded.schema, _routes, probe=_dead)
    # wg-de is missing (its traffic dropped); the real reading is tested in the lab
    config = ApiConfig(
        learner=Learner(state, _discard), monitor=monitor, link_up=lambda i: i != "wg-de"
    )
    server, thread = _start(config)
    try:
        asyncio.run_coroutine_threadsafe(_start_monitor(monitor), server.loop).result(10)
        deadline = time.monotonic() + 10
        while _get(f"{server.url}/v1/exits")[0]["state"] != "down":
            assert time.monotonic() < deadline, "uk not down after 10 s"
            time.sleep(0.02)
        exits = {e["name"]: e for e in _get(f"{server.url}/v1/exits")}
        assert (exits["uk"]["state"], exits["uk"]["via"]) == ("down", "ru")
        assert (exits["ru"]["state"], exits["ru"]["via"]) == ("up", "ru")
        assert (exits["de"]["state"], exits["de"]["via"]) == ("down", "blocked")
        metrics = _get(f"{server.url}/metrics")
        assert 'iptserver_exit_up{exit="uk"} 0.0' in metrics
        assert 'iptserver_exit_up{exit="ru"} 1.0' in metrics
        assert 'iptserver_exit_state_changes_total{exit="uk",state="down"} 1.0' in metrics
        assert 'iptserver_exit_probe_failures_total{exit="uk"}' in metrics
        rows = {r[0]: r for r in _rows(_section(_rendered(f"{server.url}/", tmp_path), "exits"))}
        assert rows["uk"][1] == "down, via ru"
        assert rows["ru"][1] == "up"
        assert rows["de"][1] == "down, blocked, tunnel down"
        assert 'iptserver_exit_link_up{exit="de"} 0.0' in metrics
        assert exits["de"]["link"] == "down" and exits["uk"]["link"] == "up"
        asyncio.run_coroutine_threadsafe(monitor.stop(), server.loop).result(10)
    finally:
        _stop(server, thread)


async def _start_monitor(monitor: Monitor) -> None:
    monitor.start()
