"""Who the proxy answers (DESIGN §5, exposure), seen from outside.

The entry's uplink neighbour ("internet") asks the entry's client-side address: it is
not a client, so it gets REFUSED and writes no route, over UDP; its TCP connection is
closed. ``dns.allow`` lets it in after a reload. A client over its rate is dropped while
another client, at another address of the client's LAN, is still answered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from iptserver.dns.config import DnsProxyConfig
from iptserver.dns.wire import tcp_frame
from iptserver.lab import Lab, ProbeError
from iptserver.lab.addresses import CLIENT, UPLINKS
from iptserver.lab.node_config import CLIENT_LAN
from tests.e2e.conftest import ENTRY_DNS, LAB_EXITS, Iptservers, api_get
from tests.e2e.test_private import learned

OUTSIDER = "internet"
SECOND_CLIENT = "10.77.1.3"


def schema(dns_extra: str = "") -> str:
    return LAB_EXITS + (
        "ingress: [wg-clients]\n"
        'mesh: [10.77.0.0/16, "fd77::/16"]\n'
        "rules:\n"
        "  - {exit: ru, domains: [ru]}\n"
        "api: {listen: 127.0.0.1:8053}\n"
        "dns:\n"
        '  listen: ["10.77.1.1:53"]\n'
        '  upstream: ["203.0.113.53:53"]\n' + dns_extra
    )


@contextlib.contextmanager
def route_to_entry(lab: Lab) -> Iterator[None]:
    """The outsider's way to the entry's client-side address: through the entry's uplink."""
    gateway = UPLINKS["entry"][0][0]
    lab.run(OUTSIDER, ["ip", "route", "add", f"{ENTRY_DNS}/32", "via", gateway])
    try:
        yield
    finally:
        lab.run(OUTSIDER, ["ip", "route", "del", f"{ENTRY_DNS}/32"], check=False)


def bench_name() -> str:
    return f"clients-{secrets.token_hex(4)}.bench.ru"


def test_an_outsider_is_refused_and_writes_no_route(iptservers: Iptservers) -> None:
    daemon = iptservers.start(schema())
    lab = daemon.lab
    name = bench_name()
    with route_to_entry(lab):
        answer = lab.query(OUTSIDER, name, server=ENTRY_DNS)
        assert answer.rcode == "REFUSED"
        assert answer.records == []
        with pytest.raises(ProbeError):  # closed at once: no answer at all
            lab.query(OUTSIDER, name, server=ENTRY_DNS, tcp=True)
    assert learned(lab) == set()
    # The same name from the client is answered and routed: the check above can fail.
    address = lab.resolve("client", name, server=ENTRY_DNS)[0][2]
    assert learned(lab) == {address}
    _, metrics = api_get(lab, 8053, "/metrics")
    assert "iptserver_dns_refused_total 2.0" in metrics


def test_dns_allow_lets_a_network_in_on_reload(iptservers: Iptservers) -> None:
    daemon = iptservers.start(schema())
    lab = daemon.lab
    with route_to_entry(lab):
        assert lab.query(OUTSIDER, bench_name(), server=ENTRY_DNS).rcode == "REFUSED"
        neighbour = UPLINKS["entry"][0][1]
        iptservers.rewrite(daemon, schema(f"  allow: [{neighbour}/32]\n"))
        assert daemon.reload()
        name = bench_name()
        answer = lab.query(OUTSIDER, name, server=ENTRY_DNS)
    assert answer.rcode == "NOERROR"
    assert {r[2] for r in answer.records} == learned(lab)


def test_a_flooding_client_is_limited_and_another_still_answered(iptservers: Iptservers) -> None:
    """Past twice its rate the kernel drops a client's datagrams before the proxy reads
    them; between the rate and twice it the proxy drops them, counted by client."""
    limits = "  rate_limit: {client: 50, network: 0, burst: 1}\n"
    daemon = iptservers.start(schema(limits))
    lab = daemon.lab
    lab.run("client", ["ip", "addr", "add", f"{SECOND_CLIENT}/24", "dev", CLIENT_LAN])
    try:
        flooded = threading.Event()
        started = time.monotonic()
        flood = threading.Thread(target=send_flood, args=(lab, 2000, flooded))
        flood.start()
        flooded.wait(10)
        other = [ask_from(lab, SECOND_CLIENT, bench_name()) for _ in range(30)]
        flood.join()
        elapsed = time.monotonic() - started
    finally:
        lab.run("client", ["ip", "addr", "del", f"{SECOND_CLIENT}/24", "dev", CLIENT_LAN])
    assert other == ["NOERROR"] * 30
    _, metrics = api_get(lab, 8053, "/metrics")
    dropped = metric(metrics, "iptserver_dns_kernel_dropped_total")
    passed = 2000 - dropped  # the kernel lets 100/s through, 100 at once
    assert passed <= 100 + 100 * elapsed + 10, (dropped, elapsed)
    limited = metric(metrics, "iptserver_dns_rate_limited_total")
    assert limited > 0  # the proxy's own limit, for what the kernel let through
    assert f'iptserver_dns_rate_limited_by_client_total{{client="{CLIENT[0][0]}"}} {limited}' in (
        metrics
    )


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, text
    return float(found.group(1))


def test_one_client_holding_idle_connections_leaves_tcp_to_the_others(
    iptservers: Iptservers,
) -> None:
    daemon = iptservers.start(schema())
    lab = daemon.lab
    lab.run("client", ["ip", "addr", "add", f"{SECOND_CLIENT}/24", "dev", CLIENT_LAN])
    held = []
    try:
        for _ in range(80):  # more than max_tcp_clients (64): only 16 of them stay open
            sock = lab.socket("client", socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.settimeout(2)
            sock.connect((ENTRY_DNS, 53))
        answer = ask_over_tcp(lab, SECOND_CLIENT, bench_name())
        open_ones = sum(1 for sock in held if still_open(sock))
    finally:
        for sock in held:
            sock.close()
        lab.run("client", ["ip", "addr", "del", f"{SECOND_CLIENT}/24", "dev", CLIENT_LAN])
    assert answer == "NOERROR"
    (limit,) = (
        f.default for f in dataclasses.fields(DnsProxyConfig) if f.name == "max_tcp_per_client"
    )
    assert open_ones == limit


def still_open(sock: socket.socket) -> bool:
    """Whether the server kept the connection (it closes the ones over its limits)."""
    sock.settimeout(0.5)
    try:
        return sock.recv(1) != b""
    except TimeoutError:
        return True
    except OSError:
        return False


def ask_over_tcp(lab: Lab, source: str, name: str) -> str:
    with lab.socket("client", socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(3)
        sock.connect((ENTRY_DNS, 53))
        sock.sendall(tcp_frame(bytes(DNSRecord.question(name, "A").pack())))
        length = int.from_bytes(sock.recv(2), "big")
        data = b""
        while len(data) < length:
            data += sock.recv(length - len(data))
    return str(RCODE.get(DNSRecord.parse(data).header.rcode))


def send_flood(lab: Lab, count: int, started: threading.Event) -> None:
    """``count`` queries from the client's own address as fast as it can send them."""
    with lab.socket("client", socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((ENTRY_DNS, 53))
        for i in range(count):
            sock.send(DNSRecord.question(f"flood{i}.bench.ru").pack())
            if i == 100:
                started.set()
    started.set()


def ask_from(lab: Lab, source: str, name: str) -> str:
    """The rcode of one query from ``source`` (an address of the client), or "timeout"."""
    with lab.socket("client", socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(2)
        sock.sendto(DNSRecord.question(name, "A").pack(), (ENTRY_DNS, 53))
        try:
            reply = DNSRecord.parse(sock.recv(4096))
        except TimeoutError:
            return "timeout"
    assert reply.q.qtype == QTYPE.A
    return str(RCODE.get(reply.header.rcode))
