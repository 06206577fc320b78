"""Clients added and removed through the API while the daemon runs, with real WireGuard
(wireguard-go) on both ends: the entry's clients interface, and each phone's interface
in the lab's client namespace, dialling the entry's client-side address.

A phone sends from its tunnel address (a rule of its own routes that address into its
tunnel), asks the entry's DNS through the tunnel and connects to the answer: the far
side says which exit it came by.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iptserver.lab import Lab, ProbeError, probes
from iptserver.lab.topology import wg_socket
from iptserver.mesh.keys import KeyStore
from tests.e2e.conftest import LAB_EXITS, Iptservers, bound

CLIENTS_NET = "10.77.9.0/24"
CLIENTS_DNS = "10.77.9.1"
PORT = 51830
API = 8053
TOKEN = "onboarding-test-token"
RU_NAME = "mail.ru"


def schema(interface: str) -> str:
    return LAB_EXITS + (
        f"ingress: [wg-clients, {interface}]\n"
        'mesh: [10.77.0.0/16, "fd77::/16"]\n'
        "rules:\n"
        "  - {exit: ru, domains: [ru]}\n"
        f"api: {{listen: 127.0.0.1:{API}}}\n"
        "dns:\n"
        f'  listen: ["10.77.1.1:53", "{CLIENTS_DNS}:53"]\n'
        '  upstream: ["203.0.113.53:53"]\n'
        "nodes:\n"
        "  entry: {entry: true, endpoint: 10.77.1.1}\n"
        "clients:\n"
        "  node: entry\n"
        f"  interface: {interface}\n"
        f"  subnet: {CLIENTS_NET}\n"
        f"  port: {PORT}\n"
    )


@dataclass
class Phone:
    """A client's WireGuard interface in the client namespace, made from its config."""

    name: str
    address: str
    interface: str
    process: subprocess.Popen[bytes]

    def whoami(self, lab: Lab, name: str = RU_NAME, timeout: float = 3.0) -> str | None:
        """Resolve ``name`` through the tunnel and connect to it: the exit it left by."""
        make = bound(lab, self.address)
        answer = probes.dns_query(make, CLIENTS_DNS, name, timeout=timeout)
        address = next(value for _, kind, value, _ in answer.records if kind == "A")
        return lab.exit_of(probes.whoami(make, address, 80, timeout))


@dataclass
class ClientsEnd:
    """The entry's WireGuard interface for clients, keyed from the state directory."""

    lab: Lab
    interface: str
    key: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = start_wireguard(self.lab, "entry", self.interface)
        self.lab.run("entry", ["wg", "set", self.interface, "private-key", str(self.key),
                               "listen-port", str(PORT)])  # fmt: skip
        self.lab.run("entry", ["ip", "addr", "add", f"{CLIENTS_DNS}/24", "dev", self.interface])
        self.lab.run("entry", ["ip", "link", "set", self.interface, "up"])

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None


@contextmanager
def clients_interface(lab: Lab, state: Path) -> Iterator[ClientsEnd]:
    interface = f"wc{lab.id}"
    KeyStore(state).private("entry", interface)
    end = ClientsEnd(lab, interface, state / "keys" / "entry" / f"{interface}.key")
    end.start()
    try:
        yield end
    finally:
        end.stop()


def start_wireguard(lab: Lab, node: str, interface: str) -> subprocess.Popen[bytes]:
    wg_socket(interface).unlink(missing_ok=True)  # a killed one's is left behind
    process = lab.spawn(node, ["wireguard-go", "-f", interface], name=interface)
    lab.wait_for(f"wireguard-go {interface}", wg_socket(interface).exists, [process])
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """By its PID: the interface goes with it (SIGTERM: its control socket too)."""
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def connect(lab: Lab, added: dict[str, Any], table: int) -> Phone:
    """A phone configured from the config the API handed back."""
    config = parse_config(added["config"])
    interface = f"wp{lab.id}{table % 10}"
    process = start_wireguard(lab, "client", interface)
    key = lab.workdir / f"{interface}.key"
    key.write_text(config["PrivateKey"] + "\n")
    key.chmod(0o600)
    address = config["Address"].split("/")[0]
    lab.run("client", ["wg", "set", interface, "private-key", str(key),
                       "peer", config["PublicKey"], "endpoint", config["Endpoint"],
                       "allowed-ips", config["AllowedIPs"].replace(" ", ""),
                       "persistent-keepalive", "1"])  # fmt: skip
    lab.run("client", ["ip", "addr", "add", config["Address"], "dev", interface])
    lab.run("client", ["ip", "link", "set", interface, "up"])
    lab.run("client", ["ip", "route", "add", "default", "dev", interface, "table", str(table)])
    lab.run("client", ["ip", "rule", "add", "from", address, "lookup", str(table)])
    return Phone(added["name"], address, interface, process)


def disconnect(lab: Lab, phone: Phone) -> None:
    lab.run("client", ["ip", "rule", "del", "from", phone.address], check=False)
    stop(phone.process)


def parse_config(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            found[key.strip()] = value.strip()
    return found


def api(lab: Lab, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """A request to the daemon's API on the entry's loopback, with the token."""
    data = json.dumps(body).encode() if body is not None else b""
    request = (
        f"{method} {path} HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data
    with lab.socket("entry") as sock:
        sock.settimeout(10)
        sock.connect(("127.0.0.1", API))
        sock.sendall(request)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, reply = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(reply)


@dataclass
class Stream:
    """A phone's traffic, one whoami a tenth of a second, until stopped: what failed."""

    lab: Lab
    phone: Phone
    address: str
    failures: list[str]
    done: int = 0

    def run(self, stop: threading.Event) -> None:
        make = bound(self.lab, self.phone.address)
        while not stop.is_set():
            try:
                probes.whoami(make, self.address, 80, 2.0)
                self.done += 1
            except ProbeError as e:
                self.failures.append(str(e))
            stop.wait(0.1)


@dataclass
class Started:
    lab: Lab
    end: ClientsEnd
    iptservers: Iptservers

    @property
    def interface(self) -> str:
        return self.end.interface


@pytest.fixture
def started(iptservers: Iptservers, tmp_path: Path) -> Iterator[Started]:
    lab = iptservers.lab
    state = tmp_path / "state"
    token = tmp_path / "token"
    token.write_text(TOKEN)
    with clients_interface(lab, state) as end:
        extra = ("--state-dir", str(state), "--api-token-file", str(token))
        iptservers.start(schema(end.interface), *extra)
        yield Started(lab, end, iptservers)
        if iptservers.current.alive:
            iptservers.stop(iptservers.current)


def test_a_client_added_live_connects_and_routes_while_another_streams(
    started: Started, tmp_path: Path
) -> None:
    lab, interface = started.lab, started.interface
    status, alice = api(lab, "POST", "/v1/clients", {"name": "alice"})
    assert status == 201, alice
    assert alice["address"] == "10.77.9.254"  # from the subnet's end
    assert base64.b64decode(alice["qr_png"]).startswith(b"\x89PNG")
    phone_a = connect(lab, alice, 3001)
    phones = [phone_a]
    try:
        assert phone_a.whoami(lab) == "ru"
        answer = probes.dns_query(bound(lab, phone_a.address), CLIENTS_DNS, RU_NAME)
        target = next(value for _, kind, value, _ in answer.records if kind == "A")
        stream = Stream(lab, phone_a, target, [])
        halt = threading.Event()
        flowing = threading.Thread(target=stream.run, args=(halt,))
        flowing.start()
        try:
            time.sleep(0.5)
            started_at = time.monotonic()
            status, bob = api(lab, "POST", "/v1/clients", {"name": "bob"})
            assert status == 201, bob
            phone_b = connect(lab, bob, 3002)
            phones.append(phone_b)
            assert phone_b.whoami(lab) == "ru"  # its first connection, by the schema
            onboarded = time.monotonic() - started_at
            time.sleep(0.5)
        finally:
            halt.set()
            flowing.join()
        assert stream.failures == [], stream.failures  # alice's stream never broke
        assert stream.done >= 5
        print(f"onboarding: API call to bob's first routed connection {onboarded:.2f} s")

        status, listed = api(lab, "GET", "/v1/clients")
        assert status == 200
        by_name = {c["name"]: c for c in listed}
        assert set(by_name) == {"alice", "bob"}
        assert by_name["bob"]["address"] == "10.77.9.253"
        assert by_name["alice"]["latest_handshake"] is not None
        assert by_name["alice"]["rx_bytes"] > 0 and by_name["alice"]["source"] == "api"

        assert api(lab, "DELETE", "/v1/clients/bob") == (200, {"removed": "bob"})
        with pytest.raises(ProbeError):
            phone_b.whoami(lab, timeout=1.0)  # bob's packets are dropped at once
        assert phone_a.whoami(lab) == "ru"
        status, listed = api(lab, "GET", "/v1/clients")
        assert [c["name"] for c in listed] == ["alice"]
        wg_peers = lab.run("entry", ["wg", "show", interface, "peers"]).stdout.split()
        assert wg_peers == [alice["public_key"]]
    finally:
        for phone in phones:
            disconnect(lab, phone)


def test_added_clients_survive_a_restart_and_bad_requests_change_nothing(
    started: Started, tmp_path: Path
) -> None:
    lab, interface, iptservers = started.lab, started.interface, started.iptservers
    status, carol = api(lab, "POST", "/v1/clients", {"name": "carol"})
    assert status == 201, carol
    for body, expected in [
        ({"name": "carol"}, (409, "exists already")),
        ({"name": "-bad"}, (400, "client name")),
        ({"name": "dave", "public_key": "not-a-key"}, (400, "not a WireGuard key")),
        ({"name": "dave", "public_key": carol["public_key"]}, (409, "carol")),
        ({"name": "dave", "extra": 1}, (400, "unknown fields")),
    ]:
        status, reply = api(lab, "POST", "/v1/clients", body)
        assert (status, expected[1] in reply["error"]) == (expected[0], True), (body, reply)
    assert api(lab, "DELETE", "/v1/clients/nobody")[0] == 404
    roster = json.loads((tmp_path / "state" / "clients.json").read_text())
    assert [c["name"] for c in roster] == ["carol"]
    assert (tmp_path / "state" / "clients.json").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "state" / "keys" / "clients" / "dave.key").exists()

    # The interface loses the peer (made anew, say), the daemon restarts: carol is back.
    lab.run("entry", ["wg", "set", interface, "peer", carol["public_key"], "remove"])
    iptservers.stop(iptservers.current)
    token = tmp_path / "token"
    iptservers.start(
        schema(interface), "--state-dir", str(tmp_path / "state"), "--api-token-file", str(token)
    )
    phone = connect(lab, carol, 3003)
    try:
        assert phone.whoami(lab) == "ru"
    finally:
        disconnect(lab, phone)


def test_a_client_the_interface_refuses_leaves_no_trace(
    iptservers: Iptservers, tmp_path: Path
) -> None:
    """The clients' interface is not there: 503, and neither a key nor a roster entry."""
    lab = iptservers.lab
    state = tmp_path / "state"
    token = tmp_path / "token"
    token.write_text(TOKEN)
    missing = f"wm{secrets.token_hex(2)}"
    text = schema(missing).replace(f', "{CLIENTS_DNS}:53"', "")
    iptservers.start(text, "--state-dir", str(state), "--api-token-file", str(token))
    status, reply = api(lab, "POST", "/v1/clients", {"name": "erin"})
    assert status == 503, reply
    assert missing in reply["error"]
    assert api(lab, "GET", "/v1/clients") == (200, [])
    assert not (state / "clients.json").exists()
    assert not (state / "keys" / "clients" / "erin.key").exists()


def test_the_cli_adds_lists_and_removes_through_the_api(started: Started, tmp_path: Path) -> None:
    lab = started.lab
    token = str(tmp_path / "token")
    cli = [sys.executable, "-m", "iptserver", "clients"]
    where = ["--api", f"127.0.0.1:{API}", "--api-token-file", token]
    config, qr = tmp_path / "frank.conf", tmp_path / "frank.png"
    lab.run("entry", [*cli, "add", "frank", *where, "--out", str(config), "--qr", str(qr)])
    assert config.stat().st_mode & 0o777 == 0o600
    assert qr.read_bytes().startswith(b"\x89PNG")
    phone = connect(lab, {"name": "frank", "config": config.read_text()}, 3004)
    try:
        assert phone.whoami(lab) == "ru"
        listed = lab.run("entry", [*cli, "ls", *where]).stdout
        assert listed.startswith("frank ") and "10.77.9.254" in listed and " api " in listed
        assert "handshake never" not in listed
        lab.run("entry", [*cli, "rm", "frank", *where])
        with pytest.raises(ProbeError):
            phone.whoami(lab, timeout=1.0)
    finally:
        disconnect(lab, phone)
    again = lab.run("entry", [*cli, "rm", "frank", *where], check=False)
    assert again.returncode == 1
    assert "404 no client 'frank'" in again.stderr


def test_added_clients_come_back_when_the_interface_is_made_anew(
    started: Started,
) -> None:
    """A WireGuard container restarted: its interface comes back empty; the daemon (not
    restarted) puts the added clients back on it as soon as it is up."""
    lab, interface, iptservers = started.lab, started.interface, started.iptservers
    status, grace = api(lab, "POST", "/v1/clients", {"name": "grace"})
    assert status == 201, grace
    started.end.stop()
    started.end.start()
    deadline = time.monotonic() + 10
    while grace["public_key"] not in lab.run("entry", ["wg", "show", interface]).stdout:
        assert time.monotonic() < deadline, "the added client never came back"
        time.sleep(0.1)
    phone = connect(lab, grace, 3005)
    try:
        assert phone.whoami(lab) == "ru"
    finally:
        disconnect(lab, phone)
    assert "put on" in iptservers.current.log
