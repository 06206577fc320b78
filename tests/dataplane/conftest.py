"""A network namespace with veth interfaces, for dataplane tests that need no lab."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

# The ingress and two tunnel interfaces most dataplane schemas name.
INTERFACES = ("ing0", "xuk", "xru")


@contextmanager
def veth_namespace(prefix: str, interfaces: tuple[str, ...] = INTERFACES) -> Iterator[str]:
    """A new namespace holding each interface (and its peer, NAMEp), up; deleted after."""
    name = f"{prefix}{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        batch = []
        for iface in interfaces:
            batch += [
                f"link add {iface} type veth peer name {iface}p",
                f"link set {iface} up",
                f"link set {iface}p up",
            ]
        subprocess.run(
            ["ip", "-n", name, "-batch", "-"], input="\n".join(batch), text=True, check=True
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def ipset_restore(netns: str, lines: list[str]) -> None:
    """Make sets and entries with the ipset tool, as another program (or a killed run)
    would have left them."""
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "ipset", "restore"],
        input="\n".join(lines) + "\n",
        text=True,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def netns() -> Iterator[str]:
    with veth_namespace("iptsdp") as name:
        yield name
