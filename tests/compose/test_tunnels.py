"""Tunnel containers for real: an entry stack, an exit stack and an office stack on the
private dockerd, every node running OSPF; traffic crosses the tunnels and leaves via the
exit, and the office's kill-switch holds while its tunnel is down.

The world, on networks of the dockerd (bridges in the dockerd's own namespace, which
forwards nothing):

* ``wan`` (203.0.113.0/24): the uplinks of the entry, the exit and the office, which dial
  each other there; its gateway leads nowhere.
* ``internet`` (198.51.100.0/24): the whoami ``server`` and the exit's second leg: the
  exit is the only way there. The server also has a leg on ``wan``, where the test makes
  it the office's default gateway (its ISP): an office that leaked would reach it.
* ``lan`` (192.0.2.0/24): the stand-in ``firezone`` and a ``client`` routed through it.
* ``officelan`` (10.88.0.0/24): the office's namespace and a ``host`` routed through it.

Entry: the user's file plus the override of ``iptserver render compose``: iptserver
(default exit ``uk``), the recursor and FRR, and two tunnel containers in firezone's
namespace: ``wg_uk`` dialling the exit, ``wg_office`` listening for the office. Exit and
office (``compose: true``): what ``iptserver render compose --stack`` writes (namespace
with kill-switch, tunnel, FRR), plus a file of the operator's that puts the namespace on
its networks. The office sends all its LAN's traffic to the entry (``send: all``). The
way back to the LANs is OSPF's: the FRR of each stack has to work for any reply to arrive.

The server reports the source address it sees: the exit's address proves the way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from iptserver.cli import main
from iptserver.render.compose_stack import FRR, KILLSWITCH_CHAIN, NAMESPACE
from iptserver.render.wireguard import SEND_ALL_TABLE
from tests.compose.harness import (
    ARTIFACTS,
    HEALTHY_TIMEOUT,
    IMAGE,
    Dockerd,
    HarnessError,
    Stack,
    run,
    wait_healthy,
)

WAN = "wan"  # dockerd networks the test makes (the stacks' files name them external)
INTERNET = "internet"
ENTRY_LAN = "192.0.2.10"
CLIENT = "192.0.2.20"
ENTRY_WAN = "203.0.113.10"
EXIT_WAN = "203.0.113.20"
OFFICE_WAN = "203.0.113.30"
ISP = "203.0.113.100"  # the server's leg on wan: the office's default gateway
EXIT_OUT = "198.51.100.20"  # the exit's leg on the internet: what the server should see
SERVER = "198.51.100.100"
OFFICE_LAN = "10.88.0.2"
OFFICE_HOST = "10.88.0.5"
TO_EXIT = "wg_uk"
TO_OFFICE = "wg_office"
TIMEOUT = 60.0  # seconds for traffic to find its way once the stacks are healthy

IDLE = (
    '["python3", "-c", "import signal, sys; '
    'signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); signal.pause()"]'
)
ENTRY_COMPOSE = f"""\
# The entry's stack: the stand-in host service, a client behind it; and the server.
version: "2.4"
networks:
  lan:
    ipam:
      config:
        - subnet: 192.0.2.0/24
          gateway: 192.0.2.1
  {WAN}:
    external: true
  {INTERNET}:
    external: true
services:
  firezone:
    image: {IMAGE}
    command: {IDLE}
    sysctls:
      net.ipv4.ip_forward: 1
    networks:
      lan: {{ipv4_address: {ENTRY_LAN}, priority: 100}}
      {WAN}: {{ipv4_address: {ENTRY_WAN}, priority: 10}}
  client:
    image: {IMAGE}
    command: {IDLE}
    cap_add: [NET_ADMIN]
    networks:
      lan: {{ipv4_address: {CLIENT}}}
  server:
    image: {IMAGE}
    command: ["python3", "-m", "iptserver.lab.whoami", "--port", "80"]
    cap_add: [NET_ADMIN]
    networks:
      {INTERNET}: {{ipv4_address: {SERVER}}}
      {WAN}: {{ipv4_address: {ISP}}}
"""
EXIT_NETWORKS = f"""\
# The exit's uplink and its way to the internet: the operator's, merged into the stack.
version: "2.4"
networks:
  {WAN}:
    external: true
  {INTERNET}:
    external: true
services:
  {NAMESPACE}:
    networks:
      {WAN}: {{ipv4_address: {EXIT_WAN}}}
      {INTERNET}: {{ipv4_address: {EXIT_OUT}}}
"""
OFFICE_NETWORKS = f"""\
# The office's uplink and LAN, and a host on that LAN.
version: "2.4"
networks:
  {WAN}:
    external: true
  officelan:
    ipam:
      config:
        - subnet: 10.88.0.0/24
          gateway: 10.88.0.1
services:
  {NAMESPACE}:
    networks:
      {WAN}: {{ipv4_address: {OFFICE_WAN}}}
      officelan: {{ipv4_address: {OFFICE_LAN}}}
  host:
    image: {IMAGE}
    command: {IDLE}
    cap_add: [NET_ADMIN]
    networks:
      officelan: {{ipv4_address: {OFFICE_HOST}}}
"""
SCHEMA = f"""\
ingress: [eth0, {TO_OFFICE}]
mesh: [192.0.2.0/24]
exits:
  uk: {{interface: {TO_EXIT}}}
default: uk
rules: []
nodes:
  entry: {{entry: true, endpoint: {ENTRY_WAN}, subnets: [192.0.2.0/24]}}
  uk: {{endpoint: {EXIT_WAN}, compose: true}}
  office: {{subnets: [10.88.0.0/24], send: all, compose: true}}
tunnels:
  {TO_EXIT}:
    subnet: 10.99.0.0/30
    preshared_key: true
    hosts:
      entry: {{compose_service: firezone}}
      uk: {{expose: 51821, masquerade: true}}
  {TO_OFFICE}:
    subnet: 10.99.0.4/30
    hosts:
      office: {{}}
      entry: {{expose: 51822, compose_service: firezone}}
"""
WHOAMI = """\
import socket, sys
with socket.create_connection((sys.argv[1], 80), timeout=4) as s:
    s.sendall(b"whoami\\n")
    print(s.makefile().readline().strip())
"""


@dataclass
class World:
    entry: Stack
    exit: Stack
    office: Stack
    up_took: float  # seconds `compose up -d` took for the three stacks


def tunnel(interface: str) -> str:
    return f"iptserver-tunnel-{interface}"


def render(tmp: Path) -> tuple[Path, Path]:
    """The entry's override and the stacks, as an operator renders them."""
    schema = tmp / "schema.yaml"
    schema.write_text(SCHEMA)
    (tmp / "docker-compose.yml").write_text(ENTRY_COMPOSE)
    frr = tmp / "frr"
    assert main(["render", "frr", str(schema), "--node", "entry", "--out", str(frr)]) == 0
    common = ["render", "compose", "--config", str(schema), "--state-dir", str(tmp / "state")]
    common += ["--image", IMAGE]
    override = tmp / "iptserver.override.yml"
    argv = ["--compose-file", str(tmp / "docker-compose.yml"), "--service", "firezone"]
    argv += ["--frr-dir", str(frr / "entry"), "-o", str(override)]
    assert main([*common, *argv]) == 0
    assert main([*common, "--stack", "--out", str(tmp / "stacks")]) == 0  # compose: true
    return override, tmp / "stacks"


@pytest.fixture(scope="module")
def world(dockerd: Dockerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The three stacks up; torn down, and the wan network removed, whatever happens."""
    tmp = tmp_path_factory.mktemp("tunnels")
    override, stacks = render(tmp)
    (tmp / "exit.yml").write_text(EXIT_NETWORKS)
    (tmp / "office.yml").write_text(OFFICE_NETWORKS)
    entry = Stack(dockerd, [tmp / "docker-compose.yml", override], "entry")
    exit_ = Stack(dockerd, [stacks / "uk" / "docker-compose.yml", tmp / "exit.yml"], "uk")
    office = Stack(
        dockerd, [stacks / "office" / "docker-compose.yml", tmp / "office.yml"], "office"
    )
    dockerd.docker("network", "create", "--subnet", "203.0.113.0/24", WAN)
    dockerd.docker("network", "create", "--subnet", "198.51.100.0/24", INTERNET)
    try:
        started = time.monotonic()
        for stack in (exit_, entry, office):
            stack.compose("up", "-d")
        world = World(entry, exit_, office, time.monotonic() - started)
        world.entry.exec("client", "ip", "route", "replace", "default", "via", ENTRY_LAN)
        world.office.exec("host", "ip", "route", "replace", "default", "via", OFFICE_LAN)
        # The office's ISP is the server's wan leg, and the server answers the office's LAN
        # through the office: were the office to leak, the server would see the host's own
        # address (the kill-switch test's control).
        in_namespace(office, NAMESPACE, "ip", "route", "replace", "default", "via", ISP)
        world.entry.exec("server", "ip", "route", "add", "10.88.0.0/24", "via", OFFICE_WAN)
        yield world
    finally:
        for stack in (entry, exit_, office):
            try:
                print(stack.compose("logs", "--no-color", "--tail=40"))
            finally:
                stack.compose("down", "-v", "-t", "5")
        dockerd.docker("network", "rm", WAN, INTERNET)


def seen(stack: Stack, service: str) -> str:
    """The source address the server sees for a connection from ``service``."""
    reply = stack.exec(service, "python3", "-c", WHOAMI, SERVER)
    found: str = json.loads(reply)["seen"]
    return found


def wait_seen(stack: Stack, service: str) -> tuple[str, float]:
    """Ask until the server answers: what it saw, and after how long."""
    started = time.monotonic()
    while True:
        try:
            return seen(stack, service), time.monotonic() - started
        except HarnessError as e:
            if time.monotonic() - started > TIMEOUT:
                raise AssertionError(f"{service} never reached the server: {e}") from e
            time.sleep(1)


def in_namespace(stack: Stack, service: str, *argv: str) -> str:
    """Run a command of the host in the network namespace of ``service``'s container."""
    container = f"{stack.project}_{service}_1"
    pid = stack.dockerd.docker("inspect", "--format", "{{.State.Pid}}", container).strip()
    return run(["nsenter", f"--target={pid}", "--net", *argv])


def test_traffic_crosses_the_tunnels_and_leaves_via_the_exit(world: World) -> None:
    started = time.monotonic()
    wait_healthy(world.exit, (NAMESPACE, tunnel(TO_EXIT), FRR))
    wait_healthy(world.office, (NAMESPACE, tunnel(TO_OFFICE), FRR))
    wait_healthy(world.entry, (tunnel(TO_EXIT), tunnel(TO_OFFICE), "iptserver", FRR))
    healthy = time.monotonic() - started

    # The entry's tunnel ends live in firezone's namespace, beside firezone's own links.
    assert f"inet {ENTRY_LAN}/24" in world.entry.exec(tunnel(TO_EXIT), "ip", "-4", "addr")
    for name in (TO_EXIT, TO_OFFICE):
        assert f": {name}:" in world.entry.exec("firezone", "ip", "-o", "link")
    # Every end read its keys from the mounted files: each had a handshake, and the
    # tunnel with a preshared key uses it.
    ends = [(world.entry, TO_EXIT), (world.exit, TO_EXIT)]
    ends += [(world.entry, TO_OFFICE), (world.office, TO_OFFICE)]
    for stack, name in ends:
        handshakes = stack.exec(tunnel(name), "wg", "show", name, "latest-handshakes").split()
        assert len(handshakes) == 2 and int(handshakes[1]) > 0, (stack.project, name, handshakes)
    for stack in (world.entry, world.exit):
        psk = stack.exec(tunnel(TO_EXIT), "wg", "show", TO_EXIT, "preshared-keys").split()
        assert psk[1] != "(none)"

    # The client behind the entry, and the host behind the office: both leave via the exit
    # (and the replies find their way back to the LANs over OSPF's routes).
    from_client, took = wait_seen(world.entry, "client")
    assert from_client == EXIT_OUT, f"the server saw {from_client}, not the exit ({EXIT_OUT})"
    from_office, office_took = wait_seen(world.office, "host")
    assert from_office == EXIT_OUT, f"the server saw {from_office}, not the exit ({EXIT_OUT})"

    # The stacks' FRR runs on the rendered files, each adjacent to the entry's over the
    # tunnel, and put the far LANs in the namespace's table.
    entry_id = "10.99.0.1"  # the entry's end of wg_uk: its router id
    for stack, lan in ((world.exit, "10.88.0.0/24"), (world.office, "192.0.2.0/24")):
        neighbours = stack.exec(FRR, "vtysh", "-c", "show ip ospf neighbor")
        assert any(entry_id in line and "Full" in line for line in neighbours.splitlines())
        assert "proto ospf" in in_namespace(stack, NAMESPACE, "ip", "route", "show", lan)

    figures = (
        f"three stacks `up -d`: {world.up_took:.1f} s\n"
        f"then every tunnel and iptserver healthy: {healthy:.1f} s\n"
        f"client (entry) to server via the exit: {took:.1f} s\n"
        f"host (office) to server via entry and exit: {office_took:.1f} s\n"
    )
    print(figures)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "compose-tunnels.txt").write_text(figures)


def test_the_office_kill_switch_holds_while_its_tunnel_is_down(world: World) -> None:
    """Stop the office's tunnel container: its interface goes, and ``send: all``'s rules
    with it, so the kernel would send the host's traffic out of the office's uplink to its
    ISP (which is the server). The kill-switch drops it: the server sees nothing. The
    control: with the kill-switch taken out by hand, the server does see the host's own
    address. With the tunnel back, the host's traffic leaves via the exit again."""
    wait_healthy(world.office, (NAMESPACE, tunnel(TO_OFFICE)))
    assert wait_seen(world.office, "host")[0] == EXIT_OUT

    world.office.compose("stop", "-t", "5", tunnel(TO_OFFICE))
    assert f": {TO_OFFICE}:" not in in_namespace(world.office, NAMESPACE, "ip", "-o", "link")
    rules = in_namespace(world.office, NAMESPACE, "ip", "rule", "show")
    assert f"lookup {SEND_ALL_TABLE}" not in rules  # the LAN's traffic takes main's default
    with pytest.raises(HarnessError, match="timed out"):
        seen(world.office, "host")

    jump = ["FORWARD", "-j", KILLSWITCH_CHAIN]
    in_namespace(world.office, NAMESPACE, "iptables", "-w", "-D", *jump)
    try:
        assert seen(world.office, "host") == OFFICE_HOST  # the leak it prevents
    finally:
        in_namespace(world.office, NAMESPACE, "iptables", "-w", "-I", *jump)
    with pytest.raises(HarnessError, match="timed out"):
        seen(world.office, "host")

    world.office.compose("start", tunnel(TO_OFFICE))
    deadline = time.monotonic() + HEALTHY_TIMEOUT
    while True:
        try:
            assert seen(world.office, "host") == EXIT_OUT
            break
        except HarnessError:
            assert time.monotonic() < deadline, "the host's traffic did not come back"
            time.sleep(1)


def test_the_entrys_tunnels_follow_a_restart_of_the_host_service(world: World) -> None:
    """dockerd restarts firezone: it comes back in a new network namespace, and the tunnel
    containers are left in the old one, empty. They notice, exit, and their restart
    policy brings them up in the new one: the client's traffic leaves via the exit again."""
    wait_healthy(world.entry, (tunnel(TO_EXIT), "iptserver"))
    assert wait_seen(world.entry, "client")[0] == EXIT_OUT
    world.entry.dockerd.docker("restart", "-t", "2", f"{world.entry.project}_firezone_1")
    restarted = time.monotonic()
    deadline = restarted + HEALTHY_TIMEOUT
    while True:
        try:
            if seen(world.entry, "client") == EXIT_OUT:
                break
        except HarnessError:
            pass
        assert time.monotonic() < deadline, "the client's traffic did not come back"
        time.sleep(1)
    took = time.monotonic() - restarted
    wait_healthy(world.entry, (tunnel(TO_EXIT), tunnel(TO_OFFICE)))
    for name in (TO_EXIT, TO_OFFICE):  # both in firezone's new namespace
        assert f": {name}:" in world.entry.exec("firezone", "ip", "-o", "link")
    figure = f"entry's tunnels routed again {took:.1f} s after the host service's restart\n"
    print(figure)
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "compose-tunnels.txt").open("a") as out:
        out.write(figure)
