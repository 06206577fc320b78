"""kernel.export_table against the real kernel: learned host routes for FRR to announce."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.dataplane.test_kernel import sh
from tests.dataplane.test_killswitch import UNREACHABLE, way

TABLE = 4242
SCHEMA = f"""
exits:
  uk: {{interface: xuk}}
  ru: {{interface: xru}}
  gone: {{interface: xgone}}
  direct: {{interface: _DEFAULT}}
ingress: [ing0]
kernel: {{export_table: {TABLE}}}
rules:
  - {{exit: uk, domains: [co.uk]}}
  - {{exit: ru, domains: [ru]}}
  - {{exit: direct, domains: [example]}}
  - {{exit: gone, domains: [gone.test]}}
"""


class Driver:
    """A Dataplane in its own process inside the namespace (tests.dataplane.export_driver)."""

    def __init__(self, netns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.dataplane.export_driver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )

    def __call__(self, **command: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            assert self.proc.stderr is not None
            raise AssertionError(f"the dataplane died on {command}:\n{self.proc.stderr.read()}")
        return json.loads(line)["result"] if "stop" not in command else None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def driver(netns: str) -> Iterator[Callable[[], Driver]]:
    started: list[Driver] = []

    def start() -> Driver:
        started.append(Driver(netns))
        return started[-1]

    yield start
    for one in started:
        one.close()


def routes(netns: str, table: int = TABLE) -> dict[str, str]:
    """Destination -> interface of every route in ``table`` (both families); a blackhole
    is "blackhole"."""
    found = {}
    for family in ("-4", "-6"):
        argv = ["ip", family, "-n", netns, "route", "show", "table", str(table)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        # A table nothing was ever put in does not exist (for IPv6 it is an error).
        assert done.returncode == 0 or "does not exist" in done.stderr, done.stderr
        for line in done.stdout.splitlines():
            words = line.split()
            assert "proto" in words and words[words.index("proto") + 1] == "157", line
            if words[0] == "blackhole":
                found[words[1]] = "blackhole"
            else:
                found[words[0]] = words[words.index("dev") + 1]
    return found


def test_learned_ips_of_tunnel_exits_become_host_routes(
    netns: str, driver: Callable[[], Driver], write_schema: Callable[[str], Path]
) -> None:
    dataplane = driver()
    problems = dataplane(apply=str(write_schema(SCHEMA)))
    assert [p.split(":")[0] for p in problems] == ["exit gone"]
    dataplane(
        learn=[
            ["203.0.113.7", "uk", 30],
            ["203.0.113.8", "ru", 30],
            ["2001:db8:ff::8", "ru", 30],
            ["203.0.113.9", "direct", 30],  # the host gateway: no tunnel to announce
            # its interface is missing: announced all the same (the mesh sends it here,
            # where the kill-switch drops it), as a blackhole
            ["203.0.113.10", "gone", 30],
        ]
    )
    assert routes(netns) == {
        "203.0.113.7": "xuk",
        "203.0.113.8": "xru",
        "2001:db8:ff::8": "xru",
        "203.0.113.10": "blackhole",
    }
    # The table only feeds FRR: no rule looks it up.
    assert str(TABLE) not in sh("ip", "-n", netns, "rule", "show")


def main_copies(netns: str) -> dict[str, str]:
    """iptserver's IPv6 host routes in main (proto 157): destination -> interface."""
    listing = sh("ip", "-6", "-n", netns, "route", "show", "table", "main", "proto", "157")
    return {
        line.split()[1 if line.startswith("blackhole") else 0]: (
            "blackhole" if line.startswith("blackhole") else line.split()[2]
        )
        for line in listing.splitlines()
    }


def test_ipv6_host_routes_are_in_main_too_for_ospf6d(
    netns: str, driver: Callable[[], Driver], write_schema: Callable[[str], Path]
) -> None:
    """FRR 8.4 imports no IPv6 table: ospf6d finds the learned /128s in main. The copies
    follow the table's routes: in, blackholed with their interface gone, expired; the
    IPv4 ones stay out of main (zebra imports those)."""
    dataplane = driver()
    dataplane(apply=str(write_schema(SCHEMA)))
    dataplane(
        learn=[
            ["2001:db8:ff::8", "ru", 10],
            ["2001:db8:ff::9", "gone", 10],
            ["203.0.113.8", "ru", 10],
        ]
    )
    assert main_copies(netns) == {"2001:db8:ff::8": "xru", "2001:db8:ff::9": "blackhole"}
    assert "203.0.113.8" not in sh("ip", "-n", netns, "route", "show", "table", "main")
    dataplane(expire=15)
    assert main_copies(netns) == {}
    assert routes(netns) == {}


def test_routes_expire_with_their_hold_and_repeat_answers_extend_it(
    netns: str, driver: Callable[[], Driver], write_schema: Callable[[str], Path]
) -> None:
    dataplane = driver()
    dataplane(apply=str(write_schema(SCHEMA)))
    dataplane(learn=[["203.0.113.7", "uk", 10], ["203.0.113.8", "uk", 20]])
    upcoming = dataplane(expire=5)
    assert upcoming is not None and 9 < upcoming <= 10
    assert set(routes(netns)) == {"203.0.113.7", "203.0.113.8"}
    dataplane(learn=[["203.0.113.7", "uk", 30]])  # a repeat answer
    assert 19 < dataplane(expire=15) <= 20
    assert set(routes(netns)) == {"203.0.113.7", "203.0.113.8"}
    dataplane(expire=25)
    assert set(routes(netns)) == {"203.0.113.7"}
    assert dataplane(expire=35) is None
    assert routes(netns) == {}


def test_an_ip_that_moves_to_another_exit_moves_its_route(
    netns: str, driver: Callable[[], Driver], write_schema: Callable[[str], Path]
) -> None:
    dataplane = driver()
    dataplane(apply=str(write_schema(SCHEMA)))
    dataplane(learn=[["203.0.113.7", "uk", 30]])
    dataplane(learn=[["203.0.113.7", "ru", 30]])
    assert routes(netns) == {"203.0.113.7": "xru"}


def test_stop_removes_the_routes_unless_state_is_kept_and_a_restart_adopts_them(
    netns: str, driver: Callable[[], Driver], write_schema: Callable[[str], Path]
) -> None:
    schema = str(write_schema(SCHEMA))
    first = driver()
    first(apply=schema)
    first(learn=[["203.0.113.7", "uk", 30], ["203.0.113.8", "ru", 100]])
    first(stop=True)
    assert set(routes(netns)) == {"203.0.113.7", "203.0.113.8"}
    # The restarted dataplane takes each route's deadline from its set entry's timeout.
    second = driver()
    second(apply=schema)
    assert set(routes(netns)) == {"203.0.113.7", "203.0.113.8"}
    second(expire=50)
    assert set(routes(netns)) == {"203.0.113.8"}
    second(stop=False)
    assert routes(netns) == {}


def test_reloads_follow_the_schema(
    netns: str, driver: Callable[[], Driver], write_schema: Callable[[str], Path]
) -> None:
    dataplane = driver()
    dataplane(apply=str(write_schema(SCHEMA)))
    dataplane(learn=[["203.0.113.7", "uk", 30], ["203.0.113.8", "ru", 30]])
    # Another table: the routes move there.
    dataplane(apply=str(write_schema(SCHEMA.replace(str(TABLE), "4343"))))
    assert routes(netns) == {}
    assert routes(netns, 4343) == {"203.0.113.7": "xuk", "203.0.113.8": "xru"}
    # uk now leaves by xru: its learned entries keep their mark, their route moves.
    moved = SCHEMA.replace(str(TABLE), "4343").replace(
        "uk: {interface: xuk}", "uk: {interface: xru}"
    )
    dataplane(apply=str(write_schema(moved)))
    assert routes(netns, 4343) == {"203.0.113.7": "xru", "203.0.113.8": "xru"}
    # Export off: the table is emptied.
    dataplane(apply=str(write_schema(SCHEMA.replace(f"kernel: {{export_table: {TABLE}}}", ""))))
    assert routes(netns, 4343) == {}
    dataplane(learn=[["203.0.113.9", "uk", 30]])
    assert routes(netns, 4343) == {} and routes(netns) == {}


# How a tunnel's interface loses its routes: its container restarts it (made anew), or
# an operator takes it down and up.
BOUNCES = {
    "made-anew": [
        ["link", "del", "xuk"],
        ["link", "add", "xuk", "type", "veth", "peer", "name", "xukp"],
        ["link", "set", "xukp", "up"],
    ],
    "down-and-up": [["link", "set", "xuk", "down"]],
}


@pytest.mark.parametrize("bounce", BOUNCES.values(), ids=BOUNCES.keys())
def test_routes_come_back_when_their_interface_is_up_again(
    netns: str,
    driver: Callable[[], Driver],
    write_schema: Callable[[str], Path],
    bounce: list[list[str]],
) -> None:
    """The exit's own route and its exported host routes: the kernel drops both with
    the interface; ``relink`` puts both back."""
    dataplane = driver()
    dataplane(apply=str(write_schema(SCHEMA)))
    dataplane(learn=[["203.0.113.7", "uk", 30], ["203.0.113.8", "ru", 30]])
    uk_mark = "0x100"  # the first exit's (kernel.mark_base)
    assert way(netns, "198.51.100.10", uk_mark) == "xuk"
    sh("ip", "-n", netns, *bounce[0])
    assert routes(netns) == {"203.0.113.8": "xru"}
    assert way(netns, "198.51.100.10", uk_mark) == UNREACHABLE  # the kill-switch stays
    for command in bounce[1:]:
        sh("ip", "-n", netns, *command)
    sh("ip", "-n", netns, "link", "set", "xuk", "up")
    assert way(netns, "198.51.100.10", uk_mark) == UNREACHABLE  # up, but nobody said so
    assert dataplane(relink="xuk") == []
    assert routes(netns) == {"203.0.113.7": "xuk", "203.0.113.8": "xru"}
    assert way(netns, "198.51.100.10", uk_mark) == "xuk"
    assert way(netns, "2001:db8:44::10", uk_mark) == "xuk"
