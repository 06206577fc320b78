"""The compose sidecar for real: a private dockerd, the image built offline, a stand-in
for the host service, and the override of ``iptserver render compose`` merged into it.

The user's compose file has three services on a documentation-range network: ``firezone``
(the stand-in host service, doing nothing), ``authority`` (the lab's DNS server, the
recursor's forwarder) and ``client``. The override puts iptserver, the recursor and FRR
in firezone's network namespace. The client asks firezone's address for names; we check
what it got, and what the kernel of that namespace holds.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iptserver.cli import main
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

SERVICE = "firezone"
HOST_ADDRESS = "192.0.2.10"  # firezone: the address the clients ask
AUTHORITY = "192.0.2.53"
CLIENT = "192.0.2.20"
MARK = 0x4242
TUNNEL_PORT = 51821

IDLE = (
    '["python3", "-c", "import signal, sys; '
    'signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); signal.pause()"]'
)
USER_COMPOSE = f"""\
# The user's stack: a stand-in for the host service, a DNS authority, a client.
version: "2.4"
networks:
  lan:
    ipam:
      config:
        - subnet: 192.0.2.0/24
          gateway: 192.0.2.1
services:
  {SERVICE}:
    image: {IMAGE}
    command: {IDLE}
    networks:
      lan: {{ipv4_address: {HOST_ADDRESS}}}
  authority:
    image: {IMAGE}
    command: ["python3", "-m", "iptserver.lab.authority", "--listen", "{AUTHORITY}"]
    networks:
      lan: {{ipv4_address: {AUTHORITY}}}
  client:
    image: {IMAGE}
    command: {IDLE}
    networks:
      lan: {{ipv4_address: {CLIENT}}}
"""
SCHEMA = f"""\
ingress: [eth0]
mesh: [192.0.2.0/24]
exits:
  uk: {{interface: _DEFAULT, mark: {MARK:#x}}}
rules:
  - exit: uk
    domains: [co.uk, gov.uk]
nodes:
  entry: {{entry: true, endpoint: {HOST_ADDRESS}}}
  uk: {{endpoint: 198.18.1.1}}
tunnels:
  wg_uk:
    subnet: 10.99.0.0/30
    hosts:
      entry: {{expose: {TUNNEL_PORT}, compose_service: {SERVICE}}}
      uk: {{expose: {TUNNEL_PORT}}}
"""
ROUTER_ID = "10.99.0.1"  # the entry's end of wg_uk: what `iptserver render frr` picks
QUERY = """\
import sys
from dnslib import DNSRecord
reply = DNSRecord.parse(DNSRecord.question(sys.argv[1]).send(sys.argv[2], 53, timeout=5))
print(" ".join(str(rr.rdata) for rr in reply.rr if rr.rtype == 1))
"""


@pytest.fixture
def stack(dockerd: Dockerd, tmp_path: Path) -> Iterator[Stack]:
    (tmp_path / "state").mkdir()
    user = tmp_path / "docker-compose.yml"
    user.write_text(USER_COMPOSE)
    schema = tmp_path / "schema.yaml"
    schema.write_text(SCHEMA)
    frr = tmp_path / "frr"
    assert main(["render", "frr", str(schema), "--node", "entry", "--out", str(frr)]) == 0
    override = tmp_path / "iptserver.override.yml"
    argv = ["render", "compose", "--compose-file", str(user), "--service", SERVICE]
    argv += ["--config", str(schema), "--state-dir", str(tmp_path / "state")]
    argv += ["--frr-dir", str(frr / "entry"), "--image", IMAGE]
    argv += ["--forward", f"{AUTHORITY}:53", "--allow-from", "192.0.2.0/24"]
    argv += ["-o", str(override)]
    assert main(argv) == 0
    stack = Stack(dockerd, [user, override], "sidecar")
    try:
        stack.compose("up", "-d")
        yield stack
    finally:
        try:
            print(stack.compose("logs", "--no-color", "--tail=60"))
        finally:
            stack.compose("down", "-v", "-t", "5")


def resolve(stack: Stack, name: str) -> set[str]:
    """The A records the client gets for ``name`` from the host service's address."""
    return set(stack.exec("client", "python3", "-c", QUERY, name, HOST_ADDRESS).split())


def members(stack: Stack) -> list[str]:
    """Every member line of every ipset in the host service's network namespace, read
    from outside (the host's ipset, entering the namespace of firezone's process)."""
    container = f"{stack.project}_{SERVICE}_1"
    pid = stack.dockerd.docker("inspect", "--format", "{{.State.Pid}}", container).strip()
    listing = run(["nsenter", f"--target={pid}", "--net", "ipset", "list"])
    return [line.strip() for line in listing.splitlines() if line[:1].isdigit()]


def test_sidecars_route_the_clients_answers_in_the_service_namespace(stack: Stack) -> None:
    wait_healthy(stack, ("iptserver", "iptserver-recursor", "iptserver-frr"))

    # The sidecars live in firezone's namespace: its address is theirs.
    for sidecar in ("iptserver", "iptserver-recursor", "iptserver-frr"):
        assert f"inet {HOST_ADDRESS}/24" in stack.exec(sidecar, "ip", "-4", "addr", "show")

    # A .co.uk name: the client gets the authority's answer through firezone's address,
    # and the namespace's sets hold the address with the uk exit's mark.
    assert resolve(stack, "www.bbc.co.uk") == {"198.51.100.10"}
    routed = [line for line in members(stack) if line.startswith("198.51.100.10 ")]
    assert routed, f"198.51.100.10 is in no set: {members(stack)}"
    assert all(f"skbmark {MARK:#x}" in line and "timeout" in line for line in routed), routed

    # A name no rule claims is answered too, and left out of the sets.
    assert resolve(stack, "www.example.com") == {"198.51.100.150"}
    assert not [line for line in members(stack) if line.startswith("198.51.100.150")]

    # FRR runs on the configuration `iptserver render frr` wrote, in the same namespace.
    ospf = stack.exec("iptserver-frr", "vtysh", "-c", "show ip ospf")
    assert f"Router ID: {ROUTER_ID}" in ospf

    # The tunnel end the schema puts in firezone has its UDP port published there.
    ports = stack.dockerd.docker("port", f"{stack.project}_{SERVICE}_1")
    assert f"{TUNNEL_PORT}/udp -> 0.0.0.0:{TUNNEL_PORT}" in ports


def test_restart_policy_and_health_check(stack: Stack) -> None:
    """SIGKILL leaves the daemon's kernel state behind; the restart policy brings it back,
    it takes over that state (the state directory is mounted) and learns again. Then the
    health check, run from the recursor's container (same namespace), passes while
    iptserver runs and fails once it is stopped."""
    wait_healthy(stack, ("iptserver", "iptserver-recursor"))
    container = f"{stack.project}_iptserver_1"
    pid = int(stack.dockerd.docker("inspect", "--format", "{{.State.Pid}}", container))
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + HEALTHY_TIMEOUT
    while (
        stack.dockerd.docker("inspect", "--format", "{{.RestartCount}}", container).strip() == "0"
    ):
        assert time.monotonic() < deadline, "iptserver was not restarted"
        time.sleep(0.5)
    wait_healthy(stack, ("iptserver",))
    assert resolve(stack, "news.gov.uk") == {"203.0.113.60"}
    routed = [line for line in members(stack) if line.startswith("203.0.113.60 ")]
    assert routed, f"203.0.113.60 is in no set: {members(stack)}"
    assert all(f"skbmark {MARK:#x}" in line for line in routed), routed

    check = ("iptserver-recursor", "iptserver-sidecar", "health", "iptserver")
    assert stack.status(*check)[0] == 0
    stack.compose("stop", "-t", "5", "iptserver")
    code, output = stack.status(*check)
    assert code != 0
    assert "Connection refused" in output


def test_the_sidecars_follow_a_restart_of_the_host_service(stack: Stack) -> None:
    """dockerd restarts the host service (its restart policy, `docker restart`): it comes
    back in a new network namespace, and the sidecars are left in the old one, empty.
    They notice, exit, and their restart policy puts them in the new one, where the
    client's answers are routed again."""
    sidecars = ("iptserver", "iptserver-recursor", "iptserver-frr")
    wait_healthy(stack, sidecars)
    stack.dockerd.docker("restart", "-t", "2", f"{stack.project}_{SERVICE}_1")
    restarted = time.monotonic()
    deadline = restarted + HEALTHY_TIMEOUT
    while True:
        try:
            answered = resolve(stack, "www.bbc.co.uk")
        except HarnessError as e:
            answered = {str(e).splitlines()[-1]}
        routed = [line for line in members(stack) if line.startswith("198.51.100.10 ")]
        if answered == {"198.51.100.10"} and routed:
            break
        assert time.monotonic() < deadline, f"not routed again: {answered}, {routed}"
        time.sleep(1)
    figure = f"routed again {time.monotonic() - restarted:.1f} s after the host service's restart\n"
    print(figure)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "compose-restart.txt").write_text(figure)
    assert all(f"skbmark {MARK:#x}" in line for line in routed), routed
    wait_healthy(stack, sidecars)
