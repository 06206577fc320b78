"""The tunnel follower against the real kernel: tunnel interfaces of a test namespace
taken down, brought up, deleted and made anew, as the daemon sees them.

The follower watches the namespace it is made in, so each scenario (follower, event loop
and all) runs on a thread inside the test's namespace (``run_in``).
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from iptserver.daemon.tunnels import TunnelFollower
from iptserver.dataplane.plan import KernelPlan, plan
from iptserver.lab.netns import run_in
from iptserver.schema import parse_schema
from tests.dataplane.conftest import veth_namespace

SCHEMA = """
exits:
  uk: {interface: xuk}
  ru: {interface: xru}
  direct: {interface: _DEFAULT}
ingress: [ing0]
rules: []
"""
# What the dataplane says each interface carries (uk's failover goes through xru too).
THROUGH = {"xuk": ["uk"], "xru": ["ru", "uk"], "ing0": ["nobody"]}
SETTLE = 0.3  # seconds for the kernel's link events to be read


def kernel_plan() -> KernelPlan:
    return plan(parse_schema(SCHEMA).schema, {})


class Daemon:
    """The follower as the daemon uses it: shown the plan, started with a relink."""

    def __init__(self, netns: str, problems: list[str] | None = None) -> None:
        self.netns = netns
        self.problems = problems or []
        self.relinked: list[str] = []
        self.follower = TunnelFollower()
        self.follower.read(kernel_plan())
        self.follower.start(self.relink, lambda interface: THROUGH.get(interface, []))

    async def relink(self, interface: str) -> list[str]:
        self.relinked.append(interface)
        return self.problems

    async def ip(self, *commands: str) -> None:
        """Run ``ip`` commands in the namespace, then let the follower read the events."""
        await asyncio.to_thread(
            subprocess.run,
            ["ip", "-n", self.netns, "-batch", "-"],
            input="\n".join(commands),
            text=True,
            check=True,
        )
        await asyncio.sleep(SETTLE)


def inside(netns: str, scenario: Coroutine[Any, Any, None]) -> None:
    run_in(netns, lambda: asyncio.run(scenario))


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture
def netns() -> Iterator[str]:
    """The tunnels xuk and xru and the ingress ing0 (veth pairs), up."""
    with veth_namespace("iptstn") as name:
        yield name


@pytest.fixture(autouse=True)
def _log_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="iptserver.daemon.tunnels")


def test_down_is_logged_with_the_exits_and_up_relinks(
    netns: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    relinked: list[str] = []

    async def scenario() -> None:
        daemon = Daemon(netns)
        try:
            await daemon.ip("link set xru down")
            assert warnings(caplog) == [
                "interface xru is down or gone: traffic of exit ru, uk is dropped until it is up"
            ]
            assert daemon.relinked == []
            await daemon.ip("link set xru up")
            relinked.extend(daemon.relinked)
        finally:
            daemon.follower.close()

    inside(netns, scenario())
    assert relinked == ["xru"]
    assert "interface xru is up: traffic of exit ru, uk goes through it again" in caplog.messages


def test_an_interface_deleted_and_made_anew_is_relinked(
    netns: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    relinked: list[str] = []

    async def scenario() -> None:
        daemon = Daemon(netns)
        try:
            await daemon.ip("link del xuk")
            assert warnings(caplog) == [
                "interface xuk is down or gone: traffic of exit uk is dropped until it is up"
            ]
            await daemon.ip("link add xuk type veth peer name xukp", "link set xuk up")
            relinked.extend(daemon.relinked)
        finally:
            daemon.follower.close()

    inside(netns, scenario())
    assert relinked == ["xuk"]


def test_an_interface_down_at_start_is_relinked_when_it_comes_up(
    netns: str,
) -> None:
    subprocess.run(["ip", "-n", netns, "link", "set", "xuk", "down"], check=True)
    relinked: list[str] = []

    async def scenario() -> None:
        daemon = Daemon(netns)
        try:
            await daemon.ip("link set xuk down")  # no change: nothing to do
            assert daemon.relinked == []
            await daemon.ip("link set xuk up")
            relinked.extend(daemon.relinked)
        finally:
            daemon.follower.close()

    inside(netns, scenario())
    assert relinked == ["xuk"]


def test_interfaces_not_read_from_a_plan_are_ignored(
    netns: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    relinked: list[str] = []

    async def scenario() -> None:
        daemon = Daemon(netns)
        try:
            # ing0 is the ingress and xnew no exit's: neither is followed
            await daemon.ip(
                "link set ing0 down",
                "link set ing0 up",
                "link add xnew type veth peer name xnewp",
                "link set xnew up",
            )
            relinked.extend(daemon.relinked)
        finally:
            daemon.follower.close()

    inside(netns, scenario())
    assert relinked == []
    assert caplog.messages == []


def test_problems_of_a_relink_are_logged_as_errors(
    netns: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        daemon = Daemon(netns, problems=["exit uk: cannot route table 100 via xuk: no"])
        try:
            await daemon.ip("link set xuk down", "link set xuk up")
        finally:
            daemon.follower.close()

    inside(netns, scenario())
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["exit uk: cannot route table 100 via xuk: no"]
    assert not any("goes through it again" in message for message in caplog.messages)


def test_no_event_is_read_after_close(
    netns: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    relinked: list[str] = []

    async def scenario() -> None:
        daemon = Daemon(netns)
        daemon.follower.close()
        daemon.follower.close()  # twice is fine
        await daemon.ip("link set xuk down", "link set xuk up")
        relinked.extend(daemon.relinked)

    inside(netns, scenario())
    assert relinked == []
    assert warnings(caplog) == []
