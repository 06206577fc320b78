"""Exit tunnels that go away and come back while iptserver runs.

The kernel drops every route through an interface that goes down or is deleted, and a
tunnel made anew (its container restarted) comes back without them. Meanwhile the exit's
traffic is dropped by its table's kill-switch, never sent out of the host's own uplink;
once the kernel says the interface is up, iptserver puts the routes back: no reload, no
health check needed. Proved by which exit the far side sees.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from iptserver.lab import Lab, LabError
from tests.e2e.conftest import BASE_SCHEMA, Iptservers, Running, api_get, resolved

NAME = "www.bbc.co.uk"  # routed via uk by SCHEMA
API_PORT = 18093
SCHEMA = (
    BASE_SCHEMA
    + """
default: direct
rules:
  - exit: uk
    domains: [co.uk]
"""
)


@pytest.fixture
def uk_tunnel(lab: Lab) -> Iterator[str]:
    """The entry's end of the UK tunnel; up and handshaken again after the test, whatever
    the test did to it (the lab is shared by the whole session)."""
    yield lab.wg_interface("uk")
    try:
        lab.make_tunnel("uk")
    except LabError:  # still there: maybe only down
        lab.tunnel_up("uk")
        lab.wait_handshakes()


def logged(daemon: Running, text: str, timeout: float = 10.0) -> None:
    """Wait until the daemon has logged ``text``."""
    deadline = time.monotonic() + timeout
    while text not in daemon.output:
        assert time.monotonic() < deadline, f"not logged in {timeout} s: {text}\n{daemon.log}"
        time.sleep(0.05)


def way(lab: Lab, address: str) -> str:
    """The exit a connection to ``address`` left by, or "nowhere" when it got no answer."""
    try:
        return lab.whoami("client", address, timeout=1.5)
    except LabError:
        return "nowhere"


def back_through_uk(lab: Lab, address: str, timeout: float = 10.0) -> str:
    """The way a connection to ``address`` takes once the UK tunnel is back: "uk" as soon
    as WireGuard has its new handshake (a lost initiation is retried after 5 s), else the
    last way seen. Without iptserver putting the routes back it stays "nowhere"."""
    deadline = time.monotonic() + timeout
    while (seen := way(lab, address)) != "uk" and time.monotonic() < deadline:
        time.sleep(0.2)
    return seen


def start(iptservers: Iptservers) -> Running:
    return iptservers.start(SCHEMA, "--api", f"127.0.0.1:{API_PORT}")


def uk_link(lab: Lab) -> tuple[str, str]:
    """What the API says of the UK tunnel: its /v1/exits ``link``, and its metric."""
    _, exits = api_get(lab, API_PORT, "/v1/exits")
    (link,) = [e["link"] for e in exits if e["name"] == "uk"]
    _, metrics = api_get(lab, API_PORT, "/metrics")
    (sample,) = [
        m for m in metrics.splitlines() if m.startswith('iptserver_exit_link_up{exit="uk"}')
    ]
    return link, sample.split()[-1]


def uk_address(lab: Lab) -> str:
    ((address, _),) = resolved(lab, NAME)
    return address


def test_a_tunnel_taken_down_and_up_carries_its_traffic_again(
    iptservers: Iptservers, uk_tunnel: str
) -> None:
    daemon = start(iptservers)
    lab = daemon.lab
    address = uk_address(lab)
    assert way(lab, address) == "uk"
    assert uk_link(lab) == ("up", "1.0")

    lab.tunnel_down("uk")
    logged(daemon, f"interface {uk_tunnel} is down or gone: traffic of exit uk is dropped")
    assert way(lab, address) == "nowhere", "not dropped while the tunnel is down"
    assert uk_link(lab) == ("down", "0.0")

    lab.tunnel_up("uk")
    logged(daemon, f"interface {uk_tunnel} is up: traffic of exit uk goes through it again")
    assert back_through_uk(lab, address) == "uk", daemon.log
    assert uk_link(lab) == ("up", "1.0")


def test_a_tunnel_made_anew_carries_its_traffic_again(
    iptservers: Iptservers, uk_tunnel: str
) -> None:
    """As when the tunnel's container restarts: the interface is deleted and made again,
    with a new index."""
    daemon = start(iptservers)
    lab = daemon.lab
    address = uk_address(lab)
    assert way(lab, address) == "uk"

    lab.drop_tunnel("uk")
    logged(daemon, f"interface {uk_tunnel} is down or gone: traffic of exit uk is dropped")
    assert way(lab, address) == "nowhere", "not dropped while the tunnel is gone"

    lab.make_tunnel("uk")
    logged(daemon, f"interface {uk_tunnel} is up: traffic of exit uk goes through it again")
    assert back_through_uk(lab, address) == "uk", daemon.log


def test_a_tunnel_made_after_start_is_routed_once_it_is_up(
    iptservers: Iptservers, uk_tunnel: str
) -> None:
    """iptserver started before the tunnel (compose starts services in any order): it
    says what is missing, serves the rest, and routes the exit once the tunnel is up."""
    lab = iptservers.lab
    lab.drop_tunnel("uk")
    daemon = start(iptservers)
    logged(daemon, f"exit uk: interface {uk_tunnel} does not exist; its traffic is dropped")
    address = uk_address(lab)
    assert way(lab, address) == "nowhere"
    assert uk_link(lab) == ("down", "0.0")
    assert way(lab, "203.0.113.77") == "direct", "the rest is served"

    lab.make_tunnel("uk")
    logged(daemon, f"interface {uk_tunnel} is up: traffic of exit uk goes through it again")
    assert back_through_uk(lab, address) == "uk", daemon.log
