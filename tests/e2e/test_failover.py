"""Exit health in the lab: kill the UK exit, watch its traffic fail over or be blocked.

The UK exit is killed by dropping everything on the uk node's uplink (``Lab.kill_exit``):
its tunnel and everything behind it die, as when the exit's host goes away. The far side
tells which way a connection came (``Lab.whoami``); with ``on_down: block`` a counter in
``internet`` on the interface facing the entry's direct uplink proves that not one packet
to the UK destination leaked out of the host's own default route.

Failover, block and recovery times are printed and written to artifacts/failover.txt
(measured, never asserted: the machine is shared).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import ipaddress
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from iptserver.lab import Lab, ProbeError, probes
from iptserver.lab.addresses import SEEN_AS
from tests.e2e.conftest import LAB_SETTINGS, Iptservers, api_get

UK_DEST = "198.51.100.10"  # in GB (the lab GeoIP database): routed via uk
UK_DEST6 = "2001:db8:44::10"
PROBE = "198.51.100.50:80"  # a GB server: reachable through uk's tunnel only
API_PORT = 18089
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
COUNT_COMMENT = "ipts-failover-test"


# How the UK exit is watched: the schema's defaults (interval 1 s, timeout 0.5 s, fall 2,
# rise 3), and faster rounds.
HEALTH = {"defaults": "", "fast": ", interval: 0.5, timeout: 0.25"}
INTERVAL = {"": 1.0, ", interval: 0.5, timeout: 0.25": 0.5}


def at_a_random_moment(interval: float) -> float:
    """Wait a random part of the probe interval: a real exit does not die just after a
    round (as it would here, right after the test saw it go up). Returns the wait."""
    wait = random.uniform(0, interval)
    time.sleep(wait)
    return wait


def schema(on_down: str, webhook: str | None = None, health: str = "") -> str:
    """UK watched; US and RU not watched."""
    hook = f"health: {{webhook: '{webhook}'}}\n" if webhook else ""
    return (
        "exits:\n"
        "  uk:\n"
        "    interface: wg-uk\n"
        f"    on_down: {on_down}\n"
        f"    health: {{probe: ['{PROBE}']{health}}}\n"
        "  ru: {interface: wg-ru}\n"
        "  us: {interface: wg-us}\n"
        "  direct: {interface: _DEFAULT}\n"
        "default: direct\n"
        "rules:\n"
        "  - {exit: uk, countries: [GB]}\n"
        "  - {exit: us, countries: [US]}\n" + LAB_SETTINGS + hook
    )


def api(lab: Lab, path: str) -> Any:
    """GET the daemon's API; it must answer 200."""
    status, body = api_get(lab, API_PORT, path)
    assert status == 200, body
    return body


def exit_view(lab: Lab, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(e for e in api(lab, "/v1/exits") if e["name"] == name)
    return found


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s")
        time.sleep(0.05)


def way_out(lab: Lab, address: str, timeout: float = 0.15) -> str | None:
    """Which way a new connection from the client to ``address`` leaves (None: it
    could not connect within ``timeout``)."""

    def make(family: int, kind: int) -> socket.socket:
        return lab.socket("client", family, kind)

    try:
        seen = probes.whoami(make, address, 80, timeout)["seen"]
    except ProbeError:
        return None
    return SEEN_AS.get(ipaddress.ip_address(seen))


def until_seen(lab: Lab, address: str, exit_name: str, since: float, timeout: float) -> float:
    """Seconds from ``since`` until a connection is first seen leaving via ``exit_name``."""
    deadline = since + timeout
    while way_out(lab, address) != exit_name:
        if time.monotonic() > deadline:
            raise AssertionError(f"no connection to {address} via {exit_name} after {timeout} s")
        time.sleep(0.01)  # a blocked connect fails at once: no busy loop
    return time.monotonic() - since


def connect_error(lab: Lab, address: str, timeout: float = 0.3) -> int | None:
    """errno of a TCP connect from the client to ``address``:80 (None: it connected)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with lab.socket("client", family) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, 80))
        except TimeoutError:
            return errno.ETIMEDOUT
        except OSError as e:
            return e.errno
    return None


@contextlib.contextmanager
def counted_at_far_side(lab: Lab, network: str) -> Iterator[Callable[[], int]]:
    """Count the packets to ``network`` that reach internet from the entry's direct
    uplink (internet's interface up-entry); yields a function reading the count."""
    tool = "ip6tables" if ":" in network else "iptables"
    rule = ["INPUT", "-i", "up-entry", "-d", network, "-m", "comment", "--comment", COUNT_COMMENT]
    lab.run("internet", [tool, "-w", "-I", *rule])

    def count() -> int:
        listed = lab.run("internet", [tool, "-w", "-nvxL", "INPUT"]).stdout
        line = next(line for line in listed.splitlines() if COUNT_COMMENT in line)
        return int(line.split()[0])

    try:
        yield count
    finally:
        lab.run("internet", [tool, "-w", "-D", *rule])


class WebhookReceiver:
    """An HTTP server on the entry namespace's loopback that keeps every JSON POST."""

    def __init__(self, lab: Lab) -> None:
        self.received: list[dict[str, Any]] = []
        self._sock = lab.socket("entry")
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/iptserver"
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _receive(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        return web.json_response({"ok": True})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/iptserver", self._receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._sock.close()

    def events(self, exit_name: str) -> list[tuple[str, str, str]]:
        return [
            (e["previous"], e["state"], e["via"]) for e in self.received if e["exit"] == exit_name
        ]


def record(line: str) -> None:
    print(line)
    ARTIFACTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with (ARTIFACTS / "failover.txt").open("a", encoding="utf-8") as out:
        out.write(f"{stamp} {line}\n")


@pytest.mark.parametrize("health", HEALTH.values(), ids=HEALTH.keys())
def test_a_dead_exit_fails_over_and_comes_back(
    iptservers: Iptservers, lab: Lab, health: str
) -> None:
    with WebhookReceiver(lab) as hook:
        text = schema("[us]", hook.url, health)
        running = iptservers.start(text, "--api", f"127.0.0.1:{API_PORT}")
        wait_for("uk up", lambda: exit_view(lab, "uk")["state"] == "up")
        assert lab.whoami("client", UK_DEST) == "uk"

        phase = at_a_random_moment(INTERVAL[health])
        killed = time.monotonic()
        lab.kill_exit("uk")
        try:
            failover = until_seen(lab, UK_DEST, "us", killed, timeout=30)
            assert exit_view(lab, "uk") | {"state": "down", "via": "us"} == exit_view(lab, "uk")
            metrics = api(lab, "/metrics")
            assert 'iptserver_exit_up{exit="uk"} 0.0' in metrics
            assert 'iptserver_exit_state_changes_total{exit="uk",state="down"} 1.0' in metrics
            assert lab.whoami("client", UK_DEST6) == "us"  # IPv6 too
            assert lab.whoami("client", "198.51.100.140") == "us"  # US traffic unaffected
            # A reload keeps the state of the exits it keeps: still down, still via us.
            assert running.reload()
            assert lab.whoami("client", UK_DEST) == "us"
            assert exit_view(lab, "uk")["state"] == "down"
        finally:
            lab.revive_exit("uk")
        revived = time.monotonic()
        recovery = until_seen(lab, UK_DEST, "uk", revived, timeout=60)
        wait_for("uk up", lambda: exit_view(lab, "uk")["state"] == "up")
        assert exit_view(lab, "uk")["via"] == "uk"
        wait_for("webhook events", lambda: len(hook.events("uk")) >= 3, timeout=10)
        assert hook.events("uk") == [
            ("unknown", "up", "uk"),
            ("up", "down", "us"),
            ("down", "up", "uk"),
        ]
        down = next(e for e in hook.received if e["state"] == "down")
        assert f"through {lab.wg_interface('uk')} failed" in down["reason"]
        assert down["at"].endswith("Z")
    log = running.output
    assert "exit uk DOWN (" in log and "its traffic now leaves via us" in log
    settings = health.strip(", ") or "schema defaults (interval 1 s, timeout 0.5 s)"
    record(
        f"failover uk->us: {failover:.2f} s from the kill to the first connection via us; "
        f"back via uk {recovery:.2f} s after the exit returned; health {settings}, fall 2, "
        f"rise 3; killed after a random {phase:.2f} s wait"
    )


def test_a_blocked_exit_leaks_nothing_out_of_the_direct_uplink(
    iptservers: Iptservers, lab: Lab
) -> None:
    iptservers.start(schema("block"), "--api", f"127.0.0.1:{API_PORT}")
    wait_for("uk up", lambda: exit_view(lab, "uk")["state"] == "up")
    assert lab.whoami("client", UK_DEST) == "uk"
    with (
        counted_at_far_side(lab, "198.51.100.0/26") as leaked,
        counted_at_far_side(lab, "2001:db8:44::/48") as leaked6,
    ):
        phase = at_a_random_moment(1.0)
        killed = time.monotonic()
        lab.kill_exit("uk")
        try:
            while connect_error(lab, UK_DEST) not in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                assert time.monotonic() < killed + 30, "UK traffic not blocked after 30 s"
            blocked = time.monotonic() - killed
            assert exit_view(lab, "uk") | {"state": "down", "via": "blocked"} == exit_view(
                lab, "uk"
            )
            # Blocked it stays: every try fails, none leaves by the direct uplink.
            for _ in range(10):
                assert connect_error(lab, UK_DEST) is not None
                assert connect_error(lab, UK_DEST6) is not None
                assert way_out(lab, "198.51.100.11") is None
            assert leaked() == 0 and leaked6() == 0
        finally:
            lab.revive_exit("uk")
        revived = time.monotonic()
        recovery = until_seen(lab, UK_DEST, "uk", revived, timeout=60)
        assert lab.whoami("client", UK_DEST6) == "uk"
        assert leaked() == 0 and leaked6() == 0
        # The counters do see what leaves by the direct uplink: the entry's own traffic
        # (no mark, the main table) to the same networks.
        assert lab.whoami("entry", "198.51.100.20") == "direct"
        assert lab.whoami("entry", "2001:db8:44::20") == "direct"
        assert leaked() > 0 and leaked6() > 0
    record(
        f"block uk: {blocked:.2f} s from the kill to the first connection refused by the "
        f"kill-switch (0 packets out of the direct uplink); back via uk {recovery:.2f} s after "
        f"the exit returned; killed after a random {phase:.2f} s wait"
    )
