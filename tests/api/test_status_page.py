"""The status page at ``GET /``, rendered by a real headless Chromium.

The real app (Learner, Policy, API) serves on 127.0.0.1 from a background thread with its
own event loop, answers go in through ``POST /v1/answers``, and Chromium (a subprocess)
loads the page; the tests read the DOM it rendered, as a person would read the page.
Chromium is only pointed at 127.0.0.1 and the page loads nothing external.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from iptserver.api import ApiConfig, make_app
from iptserver.dataplane.plan import LearnedEntry, plan
from iptserver.dns.counters import DnsCounters
from iptserver.learning import Learner, State
from iptserver.policy import Policy
from iptserver.schema import parse_schema

SCHEMA = """\
exits:
  uk: {interface: wg-uk}
  ru: {interface: wg-ru}
  direct: {interface: _DEFAULT}
default: direct
rules:
  - exit: uk
    domains: [example.com]
  - exit: ru
    domains: [mail.ru]
  - exit: ru
    nets: [203.0.113.0/24]
"""
TOKEN = "status-page-token"
ANSWERS = [
    {"qname": "www.example.com", "addresses": ["198.51.100.10"], "ttl": 300},
    {"qname": "mail.ru", "addresses": ["198.51.100.70"], "ttl": 300},
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
]


async def _discard(entries: list[LearnedEntry]) -> None:
    """The kernel stand-in: accepts every learned entry."""


@dataclass
class Server:
    """The app running in a background thread; ``url`` is its base URL."""

    url: str
    loop: asyncio.AbstractEventLoop
    runner: web.AppRunner


def _make_config() -> ApiConfig:
    loaded = parse_schema(SCHEMA, "status-test.yaml")
    state = State(Policy(loaded.schema), plan(loaded.schema, {}), loaded)
    counters = DnsCounters(queries=7, answers=6)
    return ApiConfig(learner=Learner(state, _discard), counters=counters, token=TOKEN)


def _start(config: ApiConfig) -> tuple[Server, threading.Thread]:
    """Start the app on 127.0.0.1:<random port> in a thread with its own loop."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(config))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    host, port = runner.addresses[0][:2]
    thread = threading.Thread(target=loop.run_forever, name="status-app", daemon=True)
    thread.start()
    return Server(f"http://{host}:{port}", loop, runner), thread


def _stop(server: Server, thread: threading.Thread) -> None:
    server.loop.call_soon_threadsafe(server.loop.stop)
    thread.join(timeout=10)
    server.loop.run_until_complete(server.runner.cleanup())
    server.loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """The running app, with the answers in ``ANSWERS`` already posted."""
    running, thread = _start(_make_config())
    try:
        for answer in ANSWERS:
            assert _post(f"{running.url}/v1/answers", answer) == {"ttl": 300}
        yield running
    finally:
        _stop(running, thread)


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def _chromium(url: str, tmp_path: Path, *extra: str) -> str:
    """Run headless Chromium on ``url`` and return its stdout."""
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed: run `make` (it is in APT_PACKAGES)"
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *extra, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _rendered(url: str, tmp_path: Path) -> str:
    """The DOM after the page's scripts ran, as HTML."""
    dom = _chromium(url, tmp_path, "--dump-dom")
    assert "</html>" in dom, dom[-2000:]
    return dom


def _section(dom: str, element_id: str) -> str:
    """The HTML from the element with ``element_id`` up to its closing tag's kind."""
    start = dom.index(f'id="{element_id}"')
    tag = dom[dom.rindex("<", 0, start) + 1 :].split(None, 1)[0]
    return dom[start : dom.index(f"</{tag}>", start)]


def _rows(table_html: str) -> list[list[str]]:
    """The text of each body cell, row by row (the page puts only text in cells)."""
    body = table_html.split("<tbody>", 1)[1]
    rows = []
    for tr in body.split("<tr>")[1:]:
        cells = [c.split(">", 1)[1].split("</td>", 1)[0] for c in tr.split("<td")[1:]]
        rows.append(cells)
    return rows


def test_page_and_its_files_are_served_with_a_strict_policy(server: Server) -> None:
    status, kind, body = _get(f"{server.url}/")
    assert status == 200 and kind.startswith("text/html")
    assert '<script src="/status/status.js"' in body
    assert "http://" not in body and "https://" not in body  # nothing external
    with urllib.request.urlopen(f"{server.url}/", timeout=10) as response:
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    for name, expected in (("status.js", "text/javascript"), ("status.css", "text/css")):
        status, kind, _ = _get(f"{server.url}/status/{name}")
        assert status == 200 and kind.startswith(expected)
    with pytest.raises(urllib.error.HTTPError) as missing:
        _get(f"{server.url}/status/secret.py")
    assert missing.value.code == 404


def test_status_endpoint_counts_learned_ips_per_exit(server: Server) -> None:
    _, kind, body = _get(f"{server.url}/v1/status")
    assert kind.startswith("application/json")
    status = json.loads(body)
    assert status["answers"] == 2
    assert status["learned"] == {"uk": 1, "ru": 1, "direct": 0}
    assert status["dns"]["queries"] == 7
    assert status["reloads"] == {"ok": 0, "rejected": 0}


def test_rendered_page_shows_exits_counts_and_decisions(server: Server, tmp_path: Path) -> None:
    dom = _rendered(f"{server.url}/#token={TOKEN}", tmp_path)
    exits = {r[0]: r for r in _rows(_section(dom, "exits"))}
    assert set(exits) == {"uk", "ru", "direct"}
    assert exits["uk"] == ["uk", "up", "wg-uk", "interface", "256", "100", "1"]
    assert exits["direct"][2:4] == ["_DEFAULT", "host-gateway"]
    assert exits["direct"][-1] == "0"
    decisions = _rows(_section(dom, "decisions"))
    assert decisions[0][:3] == ["mail.ru", "198.51.100.70", "ru"]  # newest first
    assert decisions[1][:4] == ["www.example.com", "198.51.100.10", "uk", "#0 (domain)"]
    counters = dict(r[:2] for r in _rows(_section(dom, "counters")))
    assert counters["answers routed"] == "2"
    assert counters["dns queries"] == "7"
    assert "3 exits, 2 answers routed" in _section(dom, "summary")


def test_explain_box_runs_the_query_from_the_url(server: Server, tmp_path: Path) -> None:
    dom = _rendered(f"{server.url}/?q=mail.ru%3D198.51.100.70", tmp_path)
    result = _section(dom, "explain-result")
    assert "<dt>Query</dt><dd>mail.ru=198.51.100.70</dd>" in result
    assert "<dt>Exit</dt><dd>ru</dd>" in result
    assert "exit ru (interface wg-ru)" in result
    assert "#1" in result


def test_explain_box_shows_an_error_for_a_bad_query(server: Server, tmp_path: Path) -> None:
    dom = _rendered(f"{server.url}/?q=not%20a%20query%3D%3D", tmp_path)
    result = _section(dom, "explain-result")
    assert 'class="error"' in result


def test_screenshot(server: Server, tmp_path: Path) -> None:
    """A picture of the page for people to look at (artifacts/status-page.png)."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    url = f"{server.url}/?q=mail.ru%3D198.51.100.70"
    _chromium(url, tmp_path, f"--screenshot={shot}", "--window-size=1280,900")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000


def test_without_the_token_the_page_shows_all_but_the_decisions(
    server: Server, tmp_path: Path
) -> None:
    """The recent decisions are a browsing log: the page says how to give the token."""
    dom = _rendered(f"{server.url}/", tmp_path)
    assert {r[0] for r in _rows(_section(dom, "exits"))} == {"uk", "ru", "direct"}
    (decisions,) = _rows(_section(dom, "decisions"))
    assert decisions == [
        "The recent decisions need the API token: open this page as /#token=TOKEN."
    ]
