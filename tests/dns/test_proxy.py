"""The proxy on real loopback sockets, in front of a real (test) authority."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import pytest
from dnslib import QTYPE, RCODE

from iptserver.dns import DnsListenError, DnsProxy, DnsProxyConfig, Endpoint, Transport
from iptserver.lab.authority import ECHO_OPTION, Authority, Mode
from iptserver.lab.canned import BIG_COUNT, HUGE_COUNT, many
from tests.dns import client
from tests.dns.client import parse, query, tcp_exchange, udp_exchange
from tests.dns.harness import PROXY_HOST, Lab, lab, run
from tests.dns.sinks import RecordingSink

TRANSPORTS = [Transport.UDP, Transport.TCP]


async def exchange(lab: Lab, transport: Transport, wire: bytes) -> bytes:
    if transport is Transport.UDP:
        return await udp_exchange(lab.udp, wire)
    (reply,) = await tcp_exchange(lab.tcp, [wire])
    return reply


RESOLVE = [
    pytest.param("www.example.test", "A", ("www.example.test",), {"198.51.100.10"}, id="a"),
    pytest.param(
        "V6.Example.Test.", "AAAA", ("v6.example.test",), {"2001:db8:44::10"}, id="aaaa-mixed-case"
    ),
    pytest.param(
        "chain.example.test",
        "A",
        ("chain.example.test", "mid.example.net", "edge.cdn.test"),
        {"198.51.100.70", "198.51.100.71"},
        id="cname-chain",
    ),
    pytest.param(
        "svc.example.test",
        "HTTPS",
        ("svc.example.test",),
        {"198.51.100.130", "198.51.100.131", "2001:db8:1::130"},
        id="https-hints",
    ),
    pytest.param(
        "_dns.resolver.test", "SVCB", ("_dns.resolver.test",), {"198.51.100.150"}, id="svcb-hints"
    ),
]


@pytest.mark.parametrize("transport", TRANSPORTS, ids=lambda t: t.value)
@pytest.mark.parametrize(("name", "qtype", "chain", "addresses"), RESOLVE)
def test_resolves_and_learns(
    transport: Transport, name: str, qtype: str, chain: tuple[str, ...], addresses: set[str]
) -> None:
    async def scenario() -> None:
        async with lab() as lb:
            reply = parse(await exchange(lb, transport, query(name, qtype, qid=0x2B2B)))
            assert reply.header.id == 0x2B2B
            assert reply.header.rcode == RCODE.NOERROR
            (call,) = lb.sink.calls
            assert call.names == chain
            assert {str(a) for a in call.addresses} == addresses
            assert lb.authority.seen[0].transport == transport.value
            assert lb.proxy.counters.learned == 1

    run(scenario)


@pytest.mark.parametrize("transport", TRANSPORTS, ids=lambda t: t.value)
def test_sink_runs_before_the_client_gets_the_answer(transport: Transport) -> None:
    """The sink takes 0.2 s; while it runs, nothing may have reached the client yet."""

    async def scenario() -> None:
        peeks: list[bool] = []
        sink = RecordingSink(delay=0.2)
        async with lab(sink=sink) as lb:
            loop = asyncio.get_running_loop()
            wire = query("www.example.test")
            if transport is Transport.UDP:
                with client.udp_socket(lb.udp) as sock:
                    sink.before_return = lambda: peeks.append(_has_data(sock))
                    await loop.sock_sendall(sock, wire)
                    await loop.sock_recv(sock, 65535)
                    received = time.monotonic()
            else:
                with socket.create_connection((str(lb.tcp.address), lb.tcp.port)) as sock:
                    sock.setblocking(False)
                    sink.before_return = lambda: peeks.append(_has_data(sock))
                    await loop.sock_sendall(sock, client.frame(wire))
                    await loop.sock_recv(sock, 65535)
                    received = time.monotonic()
            (call,) = sink.calls
            assert peeks == [False]
            assert call.finished - call.started >= 0.2
            assert received >= call.finished

    run(scenario)


def _has_data(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False


@pytest.mark.parametrize(
    ("name", "cap", "ttls"),
    [
        ("www.example.test", 300, [300]),
        ("www.example.test", 7200, [3600]),
        ("www.example.test", 0, [0]),
        ("chain.example.test", 100, [100, 100, 100, 60, 60]),
    ],
    ids=["lowered", "below-cap-kept", "zero", "chain-mixed"],
)
def test_ttls_capped_to_what_the_sink_allows(name: str, cap: int, ttls: list[int]) -> None:
    async def scenario() -> None:
        async with lab(sink=RecordingSink(cap=cap)) as lb:
            reply = parse(await udp_exchange(lb.udp, query(name)))
            assert [rr.ttl for rr in reply.rr] == ttls

    run(scenario)


def test_sink_gets_the_smallest_ttl() -> None:
    async def scenario() -> None:
        async with lab() as lb:
            await udp_exchange(lb.udp, query("chain.example.test"))
            await udp_exchange(lb.udp, query("www.example.test"))
            assert [c.ttl for c in lb.sink.calls] == [60, 3600]

    run(scenario)


@pytest.mark.parametrize(
    ("name", "qtype", "rcode"),
    [
        ("txt.example.test", "TXT", RCODE.NOERROR),
        ("www.example.test", "AAAA", RCODE.NOERROR),  # NODATA
        ("missing.example.test", "A", RCODE.NXDOMAIN),
    ],
    ids=["txt", "nodata", "nxdomain"],
)
def test_answers_without_addresses_pass_unchanged(name: str, qtype: str, rcode: int) -> None:
    async def scenario() -> None:
        async with lab(sink=RecordingSink(cap=5)) as lb:
            reply = parse(await udp_exchange(lb.udp, query(name, qtype)))
            assert reply.header.rcode == rcode
            assert [rr.ttl for rr in reply.rr] == ([3600] if qtype == "TXT" else [])
            assert lb.sink.started == []

    run(scenario)


@pytest.mark.parametrize("transport", TRANSPORTS, ids=lambda t: t.value)
def test_edns_passes_through_both_ways(transport: Transport) -> None:
    async def scenario() -> None:
        async with lab() as lb:
            wire = query("www.example.test", edns=1400, options=[(ECHO_OPTION, b"ping")])
            reply = parse(await exchange(lb, transport, wire))
            (seen,) = lb.authority.seen
            assert seen.edns_size == 1400
            assert seen.options == ((ECHO_OPTION, b"ping"),)
            (opt,) = [r for r in reply.ar if r.rtype == QTYPE.OPT]
            assert opt.edns_len == 1232  # the authority's own
            assert [(o.code, bytes(o.data)) for o in opt.rdata] == [(ECHO_OPTION, b"ping")]

    run(scenario)


@pytest.mark.parametrize(
    ("name", "edns", "count", "upstream_transports", "client_tc"),
    [
        ("big.example.test", None, BIG_COUNT, ["udp", "tcp"], True),
        ("big.example.test", 1232, BIG_COUNT, ["udp", "tcp"], True),
        ("big.example.test", 4096, BIG_COUNT, ["udp"], False),
        ("huge.example.test", 4096, HUGE_COUNT, ["udp", "tcp"], True),
        ("huge.example.test", 65000, HUGE_COUNT, ["udp"], True),  # we cap at 4096
        ("big-notc.example.test", None, BIG_COUNT, ["udp"], True),
    ],
    ids=[
        "upstream-tc-no-edns",
        "upstream-tc-edns-1232",
        "fits-4096",
        "upstream-tc-4096",
        "client-limit-capped-4096",
        "upstream-ignores-limit",
    ],
)
def test_truncation(
    name: str, edns: int | None, count: int, upstream_transports: list[str], client_tc: bool
) -> None:
    """Upstream TC → fetched again over TCP (so every address is routed); a reply too
    big for the client → TC to the client, who then gets it all over TCP."""

    async def scenario() -> None:
        async with lab() as lb:
            wire = query(name, edns=edns)
            reply = parse(await udp_exchange(lb.udp, wire))
            assert [s.transport for s in lb.authority.seen] == upstream_transports
            assert len(lb.sink.calls[0].addresses) == count
            assert bool(reply.header.tc) == client_tc
            assert len(reply.rr) == (0 if client_tc else count)
            assert lb.proxy.counters.truncated == int(client_tc)
            if edns is not None:
                assert [r.rtype for r in reply.ar] == [QTYPE.OPT]
            if client_tc:
                (full,) = await tcp_exchange(lb.tcp, [wire])
                assert len(parse(full).rr) == count
                assert not parse(full).header.tc

    run(scenario)


@pytest.mark.parametrize("transport", TRANSPORTS, ids=lambda t: t.value)
@pytest.mark.parametrize(
    ("name", "qtype"),
    [
        ("use-application-dns.net", "A"),
        ("use-application-dns.net", "AAAA"),
        ("USE-Application-DNS.net.", "HTTPS"),
    ],
    ids=["a", "aaaa", "https-mixed-case"],
)
def test_doh_canary_is_nxdomain_without_upstream(
    transport: Transport, name: str, qtype: str
) -> None:
    async def scenario() -> None:
        async with lab() as lb:
            reply = parse(await exchange(lb, transport, query(name, qtype, edns=1232, qid=77)))
            assert (reply.header.id, reply.header.rcode) == (77, RCODE.NXDOMAIN)
            assert reply.q.qtype == getattr(QTYPE, qtype)
            assert lb.authority.seen == []
            assert lb.sink.started == []
            assert lb.proxy.counters.canary == 1

    run(scenario)


def test_200_concurrent_queries_all_answered() -> None:
    async def scenario() -> None:
        async with lab() as lb:

            async def one(i: int) -> str:
                reply = parse(await udp_exchange(lb.udp, query(many(i))))
                return str(reply.rr[0].rdata)

            got = await asyncio.gather(*(one(i) for i in range(200)))
            assert got == [f"198.18.{10 + i // 250}.{i % 250}" for i in range(200)]
            assert len(lb.sink.calls) == 200
            assert lb.proxy.counters.answers == 200

    run(scenario)


def test_many_queries_on_one_tcp_connection() -> None:
    async def scenario() -> None:
        async with lab() as lb:
            wires = [query(many(i), qid=1000 + i) for i in range(30)]
            replies = [parse(r) for r in await tcp_exchange(lb.tcp, wires)]
            by_id = {r.header.id: str(r.rr[0].rdata) for r in replies}
            assert by_id == {1000 + i: f"198.18.10.{i}" for i in range(30)}

    run(scenario)


def test_a_slow_upstream_answer_holds_up_no_other_query() -> None:
    async def scenario() -> None:
        async with lab(upstream_timeout=1.0, timeout=2.0) as lb:
            slow = asyncio.create_task(
                client.udp_exchange_timed(lb.udp, query("slow.example.test"))
            )
            await asyncio.sleep(0.05)
            _, fast_at = await client.udp_exchange_timed(lb.udp, query("www.example.test"))
            _, slow_at = await slow
            assert fast_at < slow_at - 0.3

    run(scenario)


def test_ipv6_listen_and_upstream() -> None:
    async def scenario() -> None:
        v6 = ipaddress.ip_address("::1")
        async with Authority("::1") as authority:
            config = DnsProxyConfig(listen=(Endpoint(v6, 0),), upstream=(authority.endpoint,))
            sink = RecordingSink()
            async with DnsProxy(config, sink) as proxy:
                udp = proxy.addresses[0][1]
                assert str(udp).startswith("[::1]:")
                reply = parse(await udp_exchange(udp, query("v6.example.test", "AAAA")))
                assert str(reply.rr[0].rdata) == "2001:db8:44::10"
                (full,) = await tcp_exchange(udp, [query("www.example.test")])
                assert str(parse(full).rr[0].rdata) == "198.51.100.10"
            assert len(sink.calls) == 2

    run(scenario)


def test_stop_closes_the_ports_and_cancels_queries() -> None:
    async def scenario() -> None:
        async with lab(Mode.SILENT, timeout=5.0, upstream_timeout=5.0) as lb:
            endpoint = lb.udp
            pending = asyncio.create_task(udp_exchange(endpoint, query("www.example.test"), 0.5))
            await asyncio.sleep(0.1)
            assert lb.proxy.counters.queries == 1
            started = time.monotonic()
            await lb.proxy.stop()
            assert time.monotonic() - started < 0.5
            assert lb.proxy.addresses == ()
            with pytest.raises(TimeoutError):
                await pending
            # Closed, not merely silent: the kernel refuses both transports.
            # (Binding the port again would race other processes' ephemeral ports.)
            with pytest.raises(ConnectionRefusedError):
                await client.udp_exchange(endpoint, query("www.example.test"), 1.0)
            with pytest.raises(ConnectionRefusedError):
                await client.tcp_connect(endpoint)

    run(scenario)


def test_listen_on_a_port_in_use() -> None:
    async def scenario() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            port = taken.getsockname()[1]
            config = DnsProxyConfig(
                listen=(Endpoint(PROXY_HOST, 0), Endpoint(PROXY_HOST, port)),
                upstream=(Endpoint(PROXY_HOST, 53),),
            )
            proxy = DnsProxy(config, RecordingSink())
            with pytest.raises(DnsListenError, match=rf"UDP 127\.0\.0\.1:{port}.*already in use"):
                await proxy.start()
            assert proxy.addresses == ()  # the first address was released again

    run(scenario)


def test_listen_on_an_address_this_host_lacks() -> None:
    async def scenario() -> None:
        config = DnsProxyConfig(
            listen=(Endpoint(ipaddress.ip_address("192.0.2.1"), 53),),
            upstream=(Endpoint(PROXY_HOST, 53),),
        )
        with pytest.raises(DnsListenError, match=r"192\.0\.2\.1:53.*no interface of this host"):
            await DnsProxy(config, RecordingSink()).start()

    run(scenario)
