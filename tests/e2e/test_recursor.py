"""The PowerDNS Recursor plugin end to end: a real ``pdns_recursor`` in the entry serves
the client and hands every answer to iptserver's API over each transport (udp, ffi,
http; iptserver's own proxy is on loopback, out of the clients' way), so the first
connection leaves by the schema's exit and the client gets TTLs capped to the route
hold. With iptserver gone, fail-open still answers and fail-closed answers SERVFAIL."""

from __future__ import annotations

import ipaddress
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from iptserver.lab import Lab, probes
from iptserver.lab.addresses import SEEN_AS
from iptserver.lab.entry import ENTRY_DNS
from iptserver.lab.node_config import CLIENT_LAN
from iptserver.lab.recursor import API, Recursor, start_recursor
from iptserver.lab.zones import DEFAULT_TTL
from iptserver.render.recursor import TRANSPORTS, Transport
from tests.e2e.conftest import BASE_SCHEMA, Iptservers, bound, explained_exit

pytestmark = pytest.mark.skipif(
    shutil.which("pdns_recursor") is None, reason="pdns-recursor is not installed (make apt)"
)

# Fail-open answers leave with their TTLs capped (the plugin's default, as the proxy's),
# so neither the client nor the recursor's packet cache keeps an unrouted answer long.
FAIL_OPEN_TTL = 30
assert DEFAULT_TTL > FAIL_OPEN_TTL
PROXY = ("127.0.0.1", 5399)  # iptserver's own proxy: required, but nobody's resolver here
HOLD = 30
SCHEMA = (
    BASE_SCHEMA.replace('listen: ["10.77.1.1:53"]', f'listen: ["{PROXY[0]}:{PROXY[1]}"]')
    + f"""\
default: us
rules:
  - exit: ru
    domains: [mail.ru, "*.yandex.net", "=b.chain.test"]
  - exit: uk
    countries: [GB]
ttl: {{hold: {HOLD}}}
"""
)


@pytest.fixture
def recursor_dir(tmp_path: Path) -> Path:
    return tmp_path / "recursor"


@pytest.fixture
def recursors(lab: Lab, recursor_dir: Path) -> Iterator[list[Recursor]]:
    """Recursors the test starts; all stopped (by PID) at teardown."""
    started: list[Recursor] = []
    yield started
    for recursor in started:
        recursor.stop()


def answer(lab: Lab, name: str) -> list[tuple[str, int]]:
    records = lab.resolve("client", name, server=ENTRY_DNS)
    return [(value, ttl) for _, kind, value, ttl in records if kind == "A"]


EACH_TRANSPORT = pytest.mark.parametrize("transport", TRANSPORTS)


@EACH_TRANSPORT
@pytest.mark.parametrize(
    ("name", "expected", "unrouted"),
    [
        ("mail.ru", "ru", "us"),  # a domain rule (its RU address alone takes the default)
        ("cdn.example.net", "ru", "us"),  # CNAME to edge.yandex.net, matched by *.yandex.net
        ("www.bbc.co.uk", "uk", "uk"),  # a country rule
    ],
)
def test_first_connection_leaves_by_the_schema_through_the_recursor(
    lab: Lab,
    iptservers: Iptservers,
    recursors: list[Recursor],
    recursor_dir: Path,
    name: str,
    expected: str,
    unrouted: str,
    transport: Transport,
) -> None:
    running = iptservers.start(SCHEMA, "--api", API, probe=("entry", *PROXY))
    recursors.append(start_recursor(lab, recursor_dir, transport=transport))
    found = answer(lab, name)
    assert found, f"no A record for {name}"
    for address, ttl in found:
        assert ttl <= HOLD, f"{name}: TTL {ttl} not capped to {HOLD}"
        assert explained_exit(running, address) == unrouted
        assert lab.whoami("client", address) == expected, f"{name} -> {address}"
    assert "not routed" not in recursors[0].log


@pytest.mark.parametrize("transport", ["udp", "ffi"])
def test_the_datagram_transports_reach_an_api_on_ipv6_loopback(
    lab: Lab,
    iptservers: Iptservers,
    recursors: list[Recursor],
    recursor_dir: Path,
    transport: Transport,
) -> None:
    api = "[::1]:8053"
    iptservers.start(SCHEMA, "--api", api, probe=("entry", *PROXY))
    recursors.append(start_recursor(lab, recursor_dir, transport=transport, api=api))
    (address, _), *_ = answer(lab, "mail.ru")
    assert lab.whoami("client", address) == "ru"
    assert "not routed" not in recursors[0].log


# The hooks that hand an answer over: postresolve for udp, http and a fail-closed ffi,
# postresolve_ffi for a fail-open ffi (recursor 4.8.8 cannot SERVFAIL from it).
EACH_HOOK = pytest.mark.parametrize(
    ("transport", "fail_closed"),
    [("udp", False), ("http", False), ("ffi", False), ("ffi", True)],
    ids=["udp", "http", "ffi-postresolve_ffi", "ffi-postresolve"],
)


@EACH_HOOK
def test_the_whole_cname_chain_is_handed_over_and_only_ttls_change(
    lab: Lab,
    iptservers: Iptservers,
    recursors: list[Recursor],
    recursor_dir: Path,
    tmp_path: Path,
    transport: Transport,
    fail_closed: bool,
) -> None:
    # a.chain.test -> b.chain.test -> c.chain.ru (203.0.113.80): only the middle name
    # has a rule, so the exit says the chain reached iptserver whole.
    iptservers.start(SCHEMA, "--api", API, probe=("entry", *PROXY))
    plain = start_recursor(lab, tmp_path / "plain", port=5354, plugin=False)
    recursors.append(plain)
    recursors.append(
        start_recursor(lab, recursor_dir, transport=transport, fail_closed=fail_closed)
    )
    name = "a.chain.test"
    unchanged = lab.query("client", name, server=ENTRY_DNS, port=5354)
    routed = lab.query("client", name, server=ENTRY_DNS)
    assert routed.rcode == unchanged.rcode == "NOERROR"
    assert [r[:3] for r in routed.records] == [r[:3] for r in unchanged.records]
    assert [r[3] for r in routed.records] == [min(r[3], HOLD) for r in unchanged.records]
    assert [r[1] for r in routed.records] == ["CNAME", "CNAME", "A"]
    assert lab.whoami("client", "203.0.113.80") == "ru"
    # A CNAME to a name that does not exist: NXDOMAIN, nothing to route, left alone
    # (postresolve_ffi sees no rcode; there is no address at the chain's end).
    dangling = "dangling.example.org"
    unchanged = lab.query("client", dangling, server=ENTRY_DNS, port=5354)
    left = lab.query("client", dangling, server=ENTRY_DNS)
    assert left.rcode == unchanged.rcode == "NXDOMAIN"
    assert [r[:3] for r in left.records] == [r[:3] for r in unchanged.records]
    assert [r[1] for r in left.records] == ["CNAME"]
    assert left.records[0][3] > HOLD
    assert "not routed" not in recursors[-1].log


def plugin_failures(lab: Lab, recursor_dir: Path) -> int:
    """The recursor's iptserver_plugin_failures metric, read with rec_control."""
    argv = ["rec_control", f"--socket-dir={recursor_dir}", "get", "iptserver_plugin_failures"]
    return int(lab.run("entry", argv).stdout.strip())


@EACH_TRANSPORT
def test_fail_open_answers_and_fail_closed_refuses_without_iptserver(
    lab: Lab,
    iptservers: Iptservers,
    recursors: list[Recursor],
    recursor_dir: Path,
    transport: Transport,
) -> None:
    running = iptservers.start(SCHEMA, "--api", API, probe=("entry", *PROXY))
    iptservers.stop(running)
    recursors.append(start_recursor(lab, recursor_dir, transport=transport))
    assert answer(lab, "www.example.com") == [("198.51.100.150", FAIL_OPEN_TTL)]
    assert "www.example.com. not routed" in recursors[-1].log
    assert plugin_failures(lab, recursor_dir) == 1
    recursors[-1].stop()
    # ffi: postresolve here, which can SERVFAIL (postresolve_ffi cannot)
    recursors.append(start_recursor(lab, recursor_dir, fail_closed=True, transport=transport))
    refused = lab.query("client", "www.example.com", server=ENTRY_DNS)
    assert refused.rcode == "SERVFAIL"
    assert refused.records == []
    assert plugin_failures(lab, recursor_dir) == 1


def test_ffi_gives_up_on_a_stalled_iptserver_and_routes_again_once_it_resumes(
    lab: Lab, iptservers: Iptservers, recursors: list[Recursor], recursor_dir: Path
) -> None:
    running = iptservers.start(SCHEMA, "--api", API, probe=("entry", *PROXY))
    recursors.append(start_recursor(lab, recursor_dir, transport="ffi"))
    running.proc.send_signal(signal.SIGSTOP)  # reads nothing, refuses nothing
    try:
        assert answer(lab, "www.example.com") == [("198.51.100.150", FAIL_OPEN_TTL)]
    finally:
        running.proc.send_signal(signal.SIGCONT)  # now it replies to the request given up
    assert "www.example.com. not routed (no reply from iptserver within" in recursors[0].log
    for name, expected in [("mail.ru", "ru"), ("www.bbc.co.uk", "uk")]:
        (address, _), *_ = answer(lab, name)
        assert lab.whoami("client", address) == expected, f"{name} -> {address}"
    assert recursors[0].log.count("not routed") == 1


def test_ffi_waits_out_the_export_delay_and_says_it_blocked_the_thread(
    lab: Lab, iptservers: Iptservers, recursors: list[Recursor], recursor_dir: Path
) -> None:
    # kernel.export_delay_ms (100 by default) holds back each answer that adds a route.
    schema = SCHEMA + "kernel: {export_table: 200}\n"
    iptservers.start(schema, "--api", API, probe=("entry", *PROXY))
    recursors.append(start_recursor(lab, recursor_dir, transport="ffi"))
    (address, _), *_ = answer(lab, "mail.ru")
    assert lab.whoami("client", address) == "ru"
    log = recursors[0].log
    assert "not routed" not in log
    assert "blocking this worker thread (the ffi transport); with kernel.export_table" in log


@EACH_TRANSPORT
def test_the_api_token_is_sent_and_a_wrong_one_routes_nothing(
    lab: Lab,
    iptservers: Iptservers,
    recursors: list[Recursor],
    recursor_dir: Path,
    tmp_path: Path,
    transport: Transport,
) -> None:
    token, wrong = tmp_path / "token", tmp_path / "wrong"
    token.write_text("lab-token-1\n", encoding="utf-8")
    wrong.write_text("lab-token-2\n", encoding="utf-8")
    running = iptservers.start(
        SCHEMA, "--api", API, "--api-token-file", str(token), probe=("entry", *PROXY)
    )
    recursors.append(start_recursor(lab, recursor_dir, transport=transport, token_file=wrong))
    (address, _), *_ = answer(lab, "mail.ru")  # fail-open: answered, not routed
    assert "mail.ru. not routed" in recursors[-1].log
    assert lab.whoami("client", address) == "us"
    recursors[-1].stop()
    recursors.append(start_recursor(lab, recursor_dir, transport=transport, token_file=token))
    assert answer(lab, "mail.ru")
    assert lab.whoami("client", address) == "ru"
    assert "not routed" not in recursors[-1].log
    assert explained_exit(running, address) == "us"


SOURCED = SCHEMA.replace(
    "rules:\n",
    'rules:\n  - exit: uk\n    sources: [10.77.1.3]\n    domains: ["=mail.ru"]\n    weight: 5\n',
)


@pytest.mark.parametrize("transport", ["udp", "http"])
def test_the_plugin_passes_the_client_so_rules_with_sources_apply(
    lab: Lab,
    iptservers: Iptservers,
    recursors: list[Recursor],
    recursor_dir: Path,
    transport: Transport,
) -> None:
    """Two clients ask the recursor for one name: each answer reaches iptserver with its
    client, and each client's first connection leaves by its own rule's exit."""
    iptservers.start(SOURCED, "--api", API, probe=("entry", *PROXY))
    recursors.append(start_recursor(lab, recursor_dir, transport=transport, per_client=True))
    lab.ip_batch("client", [f"addr add 10.77.1.3/24 dev {CLIENT_LAN}"])
    try:
        second = probes.dns_query(bound(lab, "10.77.1.3"), ENTRY_DNS, "mail.ru")
        first = answer(lab, "mail.ru")
        [(address, _)] = first
        assert [r[2] for r in second.records if r[1] == "A"] == [address]
        assert lab.whoami("client", address) == "ru"
        seen = probes.whoami(bound(lab, "10.77.1.3"), address, 80, 3.0)["seen"]
        assert SEEN_AS[ipaddress.ip_address(seen)] == "uk"
    finally:
        lab.ip_batch("client", [f"addr del 10.77.1.3/24 dev {CLIENT_LAN}"])
    assert "not routed" not in recursors[0].log
