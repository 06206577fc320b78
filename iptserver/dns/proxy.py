"""The DNS proxy: UDP and TCP servers that forward queries and route answers first.

For each query: read it (FORMERR, NOTIMP or drop if it cannot be forwarded), answer
the DoH canary locally, forward to the upstreams, hand the answer's names and
addresses to the :class:`~iptserver.dns.sink.AnswerSink`, cap the TTLs to what the
sink allows, and only then reply. One task per query; a slow upstream or sink holds
up only its own queries.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, cast

from dnslib import QTYPE, RCODE

from iptserver.dns.answers import cap_ttls, learned_from, truncate, udp_limit, with_id
from iptserver.dns.config import DnsProxyConfig, Endpoint
from iptserver.dns.counters import DnsCounters
from iptserver.dns.queries import DOH_CANARY, BadQuery, own_reply, read_query
from iptserver.dns.sink import AnswerSink
from iptserver.dns.throttle import LogThrottle, suppressed
from iptserver.dns.upstream import Transport, UpstreamClient, UpstreamFailure
from iptserver.dns.wire import Message, WireError
from iptserver.errors import DataplaneError, IptserverError
from iptserver.schema.values import IPAddress

log = logging.getLogger(__name__)

_TCP_LENGTH = 2
_TCP_BACKLOG = 128
_BIND_ATTEMPTS = 20  # port 0: tries to find a port free for both UDP and TCP


ProxyConfig = DnsProxyConfig  # the name the daemon imports


class DnsListenError(IptserverError):
    """The proxy could not listen on one of its addresses (the message says which, why)."""


class DnsProxy:
    """``async with DnsProxy(config, sink) as proxy: ...`` or ``start()`` / ``stop()``."""

    def __init__(
        self, config: DnsProxyConfig, sink: AnswerSink, *, counters: DnsCounters | None = None
    ) -> None:
        self.config = config
        self.counters = DnsCounters() if counters is None else counters
        self._sink = sink
        self._upstream = UpstreamClient(
            config.upstream_endpoints, try_timeout=config.upstream_timeout, counters=self.counters
        )
        self._throttle = LogThrottle()
        self._bound: list[tuple[Transport, Endpoint]] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._queries: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.Task[Any]] = set()
        self._running = False
        self._accepting = False  # False while stopping: connections are closed at once

    # -- lifecycle ------------------------------------------------------------------

    @property
    def addresses(self) -> tuple[tuple[Transport, Endpoint], ...]:
        """Where the proxy listens (ports as bound, so port 0 shows the one chosen)."""
        return tuple(self._bound)

    async def start(self) -> None:
        """Listen on every configured address; raises :class:`DnsListenError` if one fails
        (the addresses already bound are released again)."""
        if self._running:
            return
        loop = asyncio.get_running_loop()
        self._accepting = True
        try:
            for endpoint in self.config.listen_endpoints:
                udp_sock, tcp_sock = _bind_pair(endpoint)
                port = udp_sock.getsockname()[1]
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpServer(self), sock=udp_sock
                )
                self._udp.append(transport)
                server = await asyncio.start_server(
                    self._serve_connection, sock=tcp_sock, backlog=_TCP_BACKLOG
                )
                self._tcp.append(server)
                bound = Endpoint(endpoint.address, port)
                self._bound += [(Transport.UDP, bound), (Transport.TCP, bound)]
        except BaseException:
            await self._close()
            raise
        self._running = True
        log.info(
            "DNS proxy listening on %s (UDP and TCP), forwarding to %s",
            ", ".join(str(e) for t, e in self._bound if t is Transport.UDP),
            ", ".join(str(e) for e in self.config.upstream_endpoints),
        )

    async def stop(self) -> None:
        """Close the listening sockets and cancel the queries and connections in flight."""
        was_running = self._running
        self._running = False
        await self._close()
        if was_running:
            log.info("DNS proxy stopped")

    async def _close(self) -> None:
        self._accepting = False
        for transport in self._udp:
            transport.close()
        for server in self._tcp:
            server.close()
        tasks = [*self._queries, *self._connections]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._tcp:
            await server.wait_closed()
        self._udp.clear()
        self._tcp.clear()
        self._bound.clear()

    async def __aenter__(self) -> DnsProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- one query ------------------------------------------------------------------

    async def answer(self, wire: bytes, client: str, transport: Transport) -> bytes | None:
        """The reply to one client packet, or None to send nothing. Bad input never raises."""
        self.counters.queries += 1
        try:
            query = read_query(wire)
        except BadQuery as bad:
            return self._bad_query(wire, bad, client, transport)
        question = query.question
        assert question is not None  # read_query accepts one question only
        if question.name == DOH_CANARY:
            self.counters.canary += 1
            log.debug("%s asked for the DoH canary %s: NXDOMAIN", client, DOH_CANARY)
            return self._reply(own_reply(wire, RCODE.NXDOMAIN, query.header, query))
        loop = asyncio.get_running_loop()
        what = f"{question.name or '.'} {QTYPE.get(question.qtype, question.qtype)}"
        try:
            upstream = await self._upstream.query(
                wire,
                question,
                tcp=transport is Transport.TCP,
                deadline=loop.time() + self.config.timeout,
            )
        except UpstreamFailure as e:
            self._warn(
                "servfail", "SERVFAIL to %s for %s: no upstream answered (%s)", client, what, e
            )
            return self._servfail(wire, query)
        reply, message = upstream.wire, upstream.message
        if message.header.rcode == RCODE.NOERROR:
            try:
                learned = learned_from(reply, message)
            except WireError as e:
                self.counters.upstream_errors += 1
                self._warn(
                    "unreadable",
                    "SERVFAIL to %s for %s: upstream %s sent an answer that cannot be read "
                    "(%s), so it cannot be routed",
                    client,
                    what,
                    upstream.upstream,
                    e,
                )
                return self._servfail(wire, query)
            if learned.addresses:
                cap = await self._learn(learned.names, learned.addresses, learned.ttl, client)
                if cap is None:
                    if self.config.fail_closed:
                        return self._servfail(wire, query)
                    cap = self.config.fail_open_ttl
                reply = cap_ttls(reply, message, cap)
                log.debug(
                    "%s: %s -> %s via %s, TTL cap %d",
                    client,
                    " -> ".join(learned.names),
                    _some(learned.addresses),
                    upstream.upstream,
                    cap,
                )
        if transport is Transport.UDP and len(reply) > (limit := udp_limit(query)):
            self.counters.truncated += 1
            log.debug(
                "%s: %d-byte answer to %s is over its %d: TC", client, len(reply), what, limit
            )
            reply = truncate(reply, message)
        return self._reply(with_id(reply, query.header.id))

    async def _learn(
        self, names: Sequence[str], addresses: Sequence[IPAddress], ttl: int, client: str
    ) -> int | None:
        """The sink's TTL cap, or None when it failed (counted and logged)."""
        if self.config.fail_closed:
            outcome = "fail-closed: answered SERVFAIL"
        else:
            outcome = f"fail-open: answered anyway, TTL at most {self.config.fail_open_ttl}s"
        try:
            async with asyncio.timeout(self.config.sink_timeout):
                cap = max(0, int(await self._sink.learn(names, addresses, ttl)))
        except TimeoutError:
            self.counters.sink_errors += 1
            self.counters.sink_timeouts += 1
            self._warn(
                "sink-timeout",
                "routing the answer for %s (client %s) took over %.1fs (%s); is the kernel "
                "or netlink busy? sink_timeout sets the bound",
                names[0],
                client,
                self.config.sink_timeout,
                outcome,
            )
            return None
        except DataplaneError as e:
            self.counters.sink_errors += 1
            self._warn(
                "sink-error",
                "could not route the answer for %s (client %s): %s (%s)",
                names[0],
                client,
                e,
                outcome,
            )
            return None
        except Exception:
            self.counters.sink_errors += 1
            if (count := self._throttle.allow("sink-bug")) is not None:
                log.exception(
                    "the answer sink failed on %s (client %s) in a way it should not: a bug (%s)%s",
                    names[0],
                    client,
                    outcome,
                    suppressed(count),
                )
            return None
        self.counters.learned += 1
        return cap

    def _bad_query(
        self, wire: bytes, bad: BadQuery, client: str, transport: Transport
    ) -> bytes | None:
        if bad.rcode is None or bad.header is None:
            self.counters.dropped += 1
            self._info(
                "dropped",
                "dropped %d bytes from %s over %s: %s",
                len(wire),
                client,
                transport.value,
                bad.reason,
            )
            return None
        if bad.rcode == RCODE.NOTIMP:
            self.counters.notimp += 1
        else:
            self.counters.formerr += 1
        name = RCODE.get(bad.rcode, bad.rcode)
        self._info("bad-query", "%s to %s over %s: %s", name, client, transport.value, bad.reason)
        return self._reply(own_reply(wire, bad.rcode, bad.header, bad.message))

    def _servfail(self, wire: bytes, query: Message) -> bytes:
        self.counters.servfail += 1
        return self._reply(own_reply(wire, RCODE.SERVFAIL, query.header, query))

    def _reply(self, wire: bytes) -> bytes:
        self.counters.answers += 1
        return wire

    def _warn(self, kind: str, message: str, *args: object) -> None:
        """WARNING, at most one line of a kind per interval; the rest at DEBUG."""
        if (count := self._throttle.allow(kind)) is not None:
            log.warning(message + "%s", *args, suppressed(count))
        else:
            log.debug(message, *args)

    def _info(self, kind: str, message: str, *args: object) -> None:
        """INFO, at most one line of a kind per interval; the rest at DEBUG."""
        if (count := self._throttle.allow(kind)) is not None:
            log.info(message + "%s", *args, suppressed(count))
        else:
            log.debug(message, *args)

    # -- servers --------------------------------------------------------------------

    def _on_datagram(self, transport: asyncio.DatagramTransport, data: bytes, addr: Any) -> None:
        if len(self._queries) >= self.config.max_inflight:
            self.counters.queries += 1
            self.counters.dropped += 1
            self._warn(
                "overload",
                "dropped a query from %s: %d queries in flight already (max_inflight); "
                "upstreams or the sink are slow, or the load is too high",
                _peer(addr),
                len(self._queries),
            )
            return
        self._spawn(self._serve_datagram(transport, data, addr))

    async def _serve_datagram(
        self, transport: asyncio.DatagramTransport, data: bytes, addr: Any
    ) -> None:
        reply = await self.answer(data, _peer(addr), Transport.UDP)
        if reply is not None and not transport.is_closing():
            transport.sendto(reply, addr)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        client = _peer(writer.get_extra_info("peername"))
        if not self._accepting:
            writer.close()
            return
        if len(self._connections) >= self.config.max_tcp_clients:
            self.counters.tcp_refused += 1
            self._warn(
                "tcp-refused",
                "closed a TCP connection from %s: %d open already (max_tcp_clients)",
                client,
                len(self._connections),
            )
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._read_frames(reader, writer, client)
        except asyncio.CancelledError:
            pass  # stop(): the server's callback must not see a cancelled task
        finally:
            writer.close()
            self._connections.discard(task)

    async def _read_frames(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str
    ) -> None:
        """Read length-prefixed queries and answer them concurrently (RFC 7766 §6.2.1.1)."""
        idle = self.config.tcp_idle_timeout
        slots = asyncio.Semaphore(self.config.tcp_pipeline)
        drain = asyncio.Lock()
        pending: set[asyncio.Task[None]] = set()
        while True:
            try:
                async with asyncio.timeout(idle):
                    prefix = await reader.readexactly(_TCP_LENGTH)
            except asyncio.IncompleteReadError as e:
                if e.partial:
                    self._tcp_cut_short(client, "the length prefix", 1, _TCP_LENGTH)
                break
            except (TimeoutError, ConnectionError):
                break
            length = int.from_bytes(prefix, "big")
            try:
                async with asyncio.timeout(idle):
                    wire = await reader.readexactly(length)
            except asyncio.IncompleteReadError as e:
                self._tcp_cut_short(client, "a query", len(e.partial), length)
                break
            except (TimeoutError, ConnectionError):
                self._tcp_cut_short(client, "a query", -1, length)
                break
            await slots.acquire()
            task = self._spawn(self._serve_frame(wire, client, writer, drain, slots))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:  # the client may half-close after its last query: still answer
            await asyncio.gather(*pending, return_exceptions=True)

    def _tcp_cut_short(self, client: str, what: str, got: int, wanted: int) -> None:
        self.counters.queries += 1
        self.counters.dropped += 1
        arrived = "not all" if got < 0 else str(got)
        self._info(
            "tcp-cut-short",
            "TCP client %s sent %s of the %d bytes of %s before closing or going idle; "
            "connection closed",
            client,
            arrived,
            wanted,
            what,
        )

    async def _serve_frame(
        self,
        wire: bytes,
        client: str,
        writer: asyncio.StreamWriter,
        drain: asyncio.Lock,
        slots: asyncio.Semaphore,
    ) -> None:
        try:
            reply = await self.answer(wire, client, Transport.TCP)
            if reply is None or writer.is_closing():
                return
            writer.write(len(reply).to_bytes(_TCP_LENGTH, "big") + reply)
            async with drain:
                await writer.drain()
        except ConnectionError:
            pass  # the client left before its answer; nothing to tell anyone
        finally:
            slots.release()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._queries.add(task)
        task.add_done_callback(self._query_done)
        return task

    def _query_done(self, task: asyncio.Task[None]) -> None:
        self._queries.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("a query task failed (a bug): %r", error, exc_info=error)


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, proxy: DnsProxy) -> None:
        self._proxy = proxy
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector loop's UDP transport does not subclass DatagramTransport
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self._transport is not None:
            self._proxy._on_datagram(self._transport, data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for replies to clients that went away: nothing to do
        log.debug("UDP listener: %s", exc)


def _some(items: Sequence[object], shown: int = 8) -> str:
    text = ", ".join(map(str, items[:shown]))
    return text + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _peer(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"[{addr[0]}]:{addr[1]}" if ":" in str(addr[0]) else f"{addr[0]}:{addr[1]}"
    return str(addr)


# -- binding ----------------------------------------------------------------------------

_BIND_HINTS = {
    errno.EADDRINUSE: "another program listens there (systemd-resolved, dnsmasq, a second "
    "iptserver?); stop it or listen elsewhere",
    errno.EADDRNOTAVAIL: "no interface of this host has that address; check `ip addr`, or "
    "start iptserver after the interface is up",
    errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
    errno.EAFNOSUPPORT: "this host has IPv6 turned off",
}


# The kernel caps this at net.core.rmem_max (raise that sysctl for bigger bursts).
_UDP_RCVBUF = 4 * 1024 * 1024


def _bind(kind: socket.SocketKind, endpoint: Endpoint) -> socket.socket:
    v6 = endpoint.address.version == 6
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, kind)
    try:
        if v6:  # so [::]:53 and 0.0.0.0:53 can both be listed
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:  # restart while old connections sit in TIME_WAIT
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:  # absorb bursts: asyncio reads one datagram per loop turn
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RCVBUF)
        sock.bind((str(endpoint.address), endpoint.port))
        if kind == socket.SOCK_STREAM:
            sock.listen(_TCP_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_pair(endpoint: Endpoint) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same address and port (port 0: one free for both)."""
    for _ in range(_BIND_ATTEMPTS if endpoint.port == 0 else 1):
        udp = _bind_or_explain(socket.SOCK_DGRAM, endpoint, "UDP")
        port = udp.getsockname()[1]
        try:
            return udp, _bind(socket.SOCK_STREAM, Endpoint(endpoint.address, port))
        except OSError as e:
            udp.close()
            if endpoint.port == 0 and e.errno == errno.EADDRINUSE:
                continue  # that port is taken for TCP only; pick another
            raise _listen_error(endpoint, "TCP", e) from e
    raise DnsListenError(f"cannot listen for DNS on {endpoint}: no port free for UDP and TCP")


def _bind_or_explain(kind: socket.SocketKind, endpoint: Endpoint, name: str) -> socket.socket:
    try:
        return _bind(kind, endpoint)
    except OSError as e:
        raise _listen_error(endpoint, name, e) from e


def _listen_error(endpoint: Endpoint, name: str, error: OSError) -> DnsListenError:
    reason = error.strerror or str(error)
    hint = _BIND_HINTS.get(error.errno or 0)
    return DnsListenError(
        f"cannot listen for DNS on {name} {endpoint}: {reason}" + (f" ({hint})" if hint else "")
    )
