"""The kill-switch and failover routes against the real kernel, in a namespace of its own.

What matters is what the kernel's lookup does with a marked packet (``ip route get ...
mark``): it must never fall through to ``main`` (the host's own uplink, ``up0`` here) while
an exit is blocked or its interface is gone, and must take the failover exit's interface
while failed over.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.dataplane.conftest import veth_namespace

SCHEMA = """
exits:
  uk: {interface: xuk}
  us: {interface: xus}
  direct: {interface: _DEFAULT}
rules: []
"""
UK, US = "0x100", "0x101"  # marks: kernel.mark_base, in the order of the exits
V4, V6 = "198.51.100.10", "2001:db8:44::10"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


@pytest.fixture
def netns() -> Iterator[str]:
    """xuk and xus (tunnels), up0 the host's uplink with the main table's default routes."""
    with veth_namespace("iptsks", ("xuk", "xus", "up0")) as name:
        batch = [
            "addr add 192.0.2.2/24 dev up0",
            "addr add 2001:db8:9::2/64 dev up0 nodad",
            "route add default via 192.0.2.1 dev up0",
            "route add default via 2001:db8:9::1 dev up0",
        ]
        subprocess.run(
            ["ip", "-n", name, "-batch", "-"], input="\n".join(batch), text=True, check=True
        )
        yield name


def drive(netns: str, schema: Path, *args: str) -> list[str]:
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.dataplane.killswitch_driver"]
    done = subprocess.run(
        [*argv, str(schema), *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 0, done.stderr
    problems: list[str] = json.loads(done.stdout)["problems"]
    return problems


def way(netns: str, address: str, mark: str) -> str:
    """The interface the kernel picks for a packet with ``mark``, or its error."""
    family = "-6" if ":" in address else "-4"
    done = sh("ip", "-n", netns, family, "route", "get", address, "mark", mark, check=False)
    if done.returncode:
        return done.stderr.strip()
    words = done.stdout.split()
    return words[words.index("dev") + 1]


UNREACHABLE = "RTNETLINK answers: No route to host"


def test_a_table_without_its_interface_drops_instead_of_falling_through(
    netns: str, write_schema
) -> None:  # type: ignore[no-untyped-def]
    schema = write_schema(SCHEMA)
    assert drive(netns, schema) == []
    assert way(netns, V4, UK) == "xuk" and way(netns, V6, UK) == "xuk"
    for family in ("-4", "-6"):
        table = sh("ip", "-n", netns, family, "route", "show", "table", "100").stdout
        unreachable = [line for line in table.splitlines() if line.startswith("unreachable")]
        assert len(unreachable) == 1 and "metric 4000000000" in unreachable[0], table
    # Without the kill-switch route the lookup would fall through to main (up0):
    sh("ip", "-n", netns, "link", "del", "xuk")  # the tunnel's interface disappears
    assert way(netns, V4, UK) == UNREACHABLE
    assert way(netns, V6, UK) == UNREACHABLE
    assert way(netns, V4, "0x999") == "up0"  # unmarked traffic: main, as before
    # A restart with the interface still gone: rule and kill-switch go in, reported.
    problems = drive(netns, schema)
    assert problems == [
        "exit uk: interface xuk does not exist; its traffic is dropped until it is up"
    ]
    assert way(netns, V4, UK) == UNREACHABLE


def test_failover_block_direct_and_back(netns: str, write_schema) -> None:  # type: ignore[no-untyped-def]
    schema = write_schema(SCHEMA)
    assert drive(netns, schema, "uk=us") == []
    assert way(netns, V4, UK) == "xus" and way(netns, V6, UK) == "xus"
    assert way(netns, V4, US) == "xus"
    assert drive(netns, schema, "uk=") == []  # blocked
    assert way(netns, V4, UK) == UNREACHABLE and way(netns, V6, UK) == UNREACHABLE
    assert drive(netns, schema, "uk=direct") == []  # the host gateway: through main
    assert way(netns, V4, UK) == "up0" and way(netns, V6, UK) == "up0"
    assert drive(netns, schema) == []  # back: its own route
    assert way(netns, V4, UK) == "xuk" and way(netns, V6, UK) == "xuk"
    drive(netns, schema, "uk=", "--stop")
    for family in ("-4", "-6"):
        assert sh("ip", "-n", netns, family, "route", "show", "table", "100").stdout == ""
        assert "fwmark" not in sh("ip", "-n", netns, family, "rule").stdout
