"""Where clients reach the proxy: a UDP and a TCP socket on each listen address.

This module owns the sockets and their limits, not the queries: every datagram and
every TCP frame becomes one task that calls the ``answer`` function it was given
(:meth:`~iptserver.dns.proxy.DnsProxy.answer`) and sends back what that returns.
Limits: who may ask and how fast (:class:`~iptserver.dns.clients.ClientGate`: others
get REFUSED, a client over its rate is dropped), ``max_inflight`` queries at once (UDP
beyond it dropped), ``max_tcp_clients`` connections and ``max_tcp_per_client`` of one
address (more closed at once), ``tcp_pipeline`` queries in flight per connection,
``tcp_idle_timeout`` seconds of silence before a connection is closed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from dnslib import RCODE

from iptserver.dns.clients import ClientGate, Verdict
from iptserver.dns.config import DnsProxyConfig
from iptserver.dns.counters import DnsCounters
from iptserver.dns.queries import BadQuery, own_reply, read_query
from iptserver.dns.throttle import ThrottledLog
from iptserver.dns.upstream import Transport
from iptserver.dns.wire import TCP_LENGTH_SIZE, tcp_frame, tcp_length
from iptserver.errors import IptserverError
from iptserver.schema.values import Endpoint

log = logging.getLogger(__name__)

Answer = Callable[[bytes, str, Transport], Awaitable[bytes | None]]
"""``answer(wire, client, transport)``: the reply to send, or None to send nothing."""

_TCP_BACKLOG = 128
_BIND_ATTEMPTS = 20  # port 0: tries to find a port free for both UDP and TCP
_NOT_OURS = "not a client (its address is not on the ingress, the mesh or dns.allow)"
# The kernel caps this at net.core.rmem_max (raise that sysctl for bigger bursts).
_UDP_RCVBUF = 4 * 1024 * 1024


class DnsListenError(IptserverError):
    """The proxy could not listen on one of its addresses (the message says which, why)."""


class Listeners:
    """The UDP and TCP servers of the proxy: ``await start()``, ``await close()``."""

    def __init__(
        self,
        config: DnsProxyConfig,
        answer: Answer,
        counters: DnsCounters,
        clients: ClientGate | None = None,
    ) -> None:
        self.config = config
        # Who may ask (default: this host only); the daemon replaces it on a reload.
        self.clients = ClientGate() if clients is None else clients
        self._answer = answer
        self._counters = counters
        self._log = ThrottledLog(log)
        self._bound: list[tuple[Transport, Endpoint]] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._queries: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.Task[Any]] = set()
        self._per_client: Counter[str] = Counter()  # open TCP connections by address
        self._accepting = False  # False while closing: connections are closed at once

    @property
    def addresses(self) -> tuple[tuple[Transport, Endpoint], ...]:
        """Where they listen (ports as bound, so port 0 shows the one chosen)."""
        return tuple(self._bound)

    async def start(self) -> None:
        """Listen on every configured address; raises :class:`DnsListenError` if one fails
        (the addresses already bound are released again)."""
        loop = asyncio.get_running_loop()
        self._accepting = True
        try:
            for endpoint in self.config.listen_endpoints:
                udp_sock, tcp_sock = _bind_pair(endpoint, self.config.reuse_port)
                bound = Endpoint(endpoint.address, udp_sock.getsockname()[1])
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpServer(self._on_datagram), sock=udp_sock
                )
                self._udp.append(transport)
                server = await asyncio.start_server(
                    self._serve_connection, sock=tcp_sock, backlog=_TCP_BACKLOG
                )
                self._tcp.append(server)
                self._bound += [(Transport.UDP, bound), (Transport.TCP, bound)]
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the sockets and cancel the queries and connections in flight."""
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

    # -- UDP --------------------------------------------------------------------------

    def _on_datagram(self, transport: asyncio.DatagramTransport, data: bytes, addr: Any) -> None:
        verdict = self.clients.check(addr[0], time.monotonic())
        if verdict is not Verdict.ALLOW:
            reply = self._turned_away(verdict, data, peer_text(addr), Transport.UDP)
            if reply is not None:
                transport.sendto(reply, addr)
            return
        if len(self._queries) >= self.config.max_inflight:
            self._drop(
                self._log.warning,
                "overload",
                "dropped a query from %s: %d queries in flight already (max_inflight); "
                "upstreams or the sink are slow, or the load is too high",
                peer_text(addr),
                len(self._queries),
            )
            return
        self._spawn(self._serve_datagram(transport, data, addr))

    async def _serve_datagram(
        self, transport: asyncio.DatagramTransport, data: bytes, addr: Any
    ) -> None:
        reply = await self._answer(data, peer_text(addr), Transport.UDP)
        if reply is not None and not transport.is_closing():
            transport.sendto(reply, addr)

    # -- TCP --------------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        client, address = peer_text(peer), peer[0]
        if not self._accepting or not self._admit_connection(client, address):
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._per_client[address] += 1
        try:
            await self._read_frames(reader, writer, client, address)
        except asyncio.CancelledError:
            pass  # close(): the server's callback must not see a cancelled task
        finally:
            writer.close()
            self._connections.discard(task)
            self._per_client[address] -= 1
            if not self._per_client[address]:
                del self._per_client[address]

    def _admit_connection(self, client: str, address: str) -> bool:
        """Whether a new connection may stay open (else counted and said why)."""
        if self.clients.check(address, time.monotonic()) is Verdict.REFUSE:
            self._counters.refused += 1
            self._log.warning("refused", "closed a TCP connection from %s: %s", client, _NOT_OURS)
            return False
        if len(self._connections) >= self.config.max_tcp_clients:
            why = f"{len(self._connections)} open already (max_tcp_clients)"
        elif self._per_client[address] >= self.config.max_tcp_per_client:
            why = f"{self._per_client[address]} open from it already (max_tcp_per_client)"
        else:
            return True
        self._counters.tcp_refused += 1
        self._log.warning("tcp-refused", "closed a TCP connection from %s: %s", client, why)
        return False

    async def _read_frames(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: str,
        address: str,
    ) -> None:
        """Read length-prefixed queries and answer them concurrently (RFC 7766 §6.2.1.1)."""
        slots = asyncio.Semaphore(self.config.tcp_pipeline)
        drain = asyncio.Lock()
        pending: set[asyncio.Task[None]] = set()
        while (wire := await self._read_frame(reader, client)) is not None:
            verdict = self.clients.check(address, time.monotonic())
            if verdict is not Verdict.ALLOW:
                if (reply := self._turned_away(verdict, wire, client, Transport.TCP)) is not None:
                    writer.write(tcp_frame(reply))
                continue
            await slots.acquire()
            task = self._spawn(self._serve_frame(wire, client, writer, drain, slots))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:  # the client may half-close after its last query: still answer
            await asyncio.gather(*pending, return_exceptions=True)

    async def _read_frame(self, reader: asyncio.StreamReader, client: str) -> bytes | None:
        """The next query of the connection; None when it ends (EOF, idle, cut short)."""
        idle = self.config.tcp_idle_timeout
        try:
            async with asyncio.timeout(idle):
                prefix = await reader.readexactly(TCP_LENGTH_SIZE)
        except asyncio.IncompleteReadError as e:
            if e.partial:
                self._tcp_cut_short(client, "the length prefix", 1, TCP_LENGTH_SIZE)
            return None
        except (TimeoutError, ConnectionError):
            return None
        length = tcp_length(prefix)
        try:
            async with asyncio.timeout(idle):
                return await reader.readexactly(length)
        except asyncio.IncompleteReadError as e:
            self._tcp_cut_short(client, "a query", len(e.partial), length)
        except (TimeoutError, ConnectionError):
            self._tcp_cut_short(client, "a query", -1, length)
        return None

    def _tcp_cut_short(self, client: str, what: str, got: int, wanted: int) -> None:
        self._drop(
            self._log.info,
            "tcp-cut-short",
            "TCP client %s sent %s of the %d bytes of %s before closing or going idle; "
            "connection closed",
            client,
            "not all" if got < 0 else str(got),
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
            reply = await self._answer(wire, client, Transport.TCP)
            if reply is None or writer.is_closing():
                return
            writer.write(tcp_frame(reply))
            async with drain:
                await writer.drain()
        except ConnectionError:
            pass  # the client left before its answer; nothing to tell anyone
        finally:
            slots.release()

    # -- queries ----------------------------------------------------------------------

    def _turned_away(
        self, verdict: Verdict, wire: bytes, client: str, transport: Transport
    ) -> bytes | None:
        """What a query the gate did not let in gets: REFUSED when it is not a client's
        (or a client's over its rate, over TCP: no spoofed source there), else nothing."""
        self._counters.queries += 1
        if verdict is Verdict.LIMIT:
            self._counters.rate_limited += 1
            message = "%s sends more than dns.rate_limit allows: its queries are dropped"
            self._log.warning("rate-limited", message, client)
            if transport is Transport.UDP:
                self._counters.dropped += 1
                return None
        else:
            self._counters.refused += 1
            message = "REFUSED to %s over %s: %s"
            self._log.warning("refused", message, client, transport.value, _NOT_OURS)
        try:
            query = read_query(wire)
        except BadQuery:
            self._counters.dropped += 1
            return None
        self._counters.answers += 1
        return own_reply(wire, RCODE.REFUSED, query.header, query)

    def _drop(self, say: Callable[..., None], kind: str, message: str, *args: object) -> None:
        """Count a query that came in but is not answered, and say why (throttled)."""
        self._counters.queries += 1
        self._counters.dropped += 1
        say(kind, message, *args)

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
    def __init__(
        self, on_datagram: Callable[[asyncio.DatagramTransport, bytes, Any], None]
    ) -> None:
        self._on_datagram = on_datagram
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector loop's UDP transport does not subclass DatagramTransport
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self._transport is not None:
            self._on_datagram(self._transport, data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for replies to clients that went away: nothing to do
        log.debug("UDP listener: %s", exc)


def peer_text(addr: Any) -> str:
    """A socket address as logs show it: ``192.0.2.1:5353`` or ``[2001:db8::1]:5353``."""
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


def _bind(kind: socket.SocketKind, endpoint: Endpoint, reuse_port: bool) -> socket.socket:
    v6 = endpoint.address.version == 6
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, kind)
    try:
        if reuse_port:  # the kernel spreads clients over the processes bound here
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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


def _bind_pair(endpoint: Endpoint, reuse_port: bool) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same address and port (port 0: one free for both)."""
    for _ in range(_BIND_ATTEMPTS if endpoint.port == 0 else 1):
        udp = _bind_or_explain(socket.SOCK_DGRAM, endpoint, "UDP", reuse_port)
        port = udp.getsockname()[1]
        try:
            return udp, _bind(socket.SOCK_STREAM, Endpoint(endpoint.address, port), reuse_port)
        except OSError as e:
            udp.close()
            if endpoint.port == 0 and e.errno == errno.EADDRINUSE:
                continue  # that port is taken for TCP only; pick another
            raise _listen_error(endpoint, "TCP", e) from e
    raise DnsListenError(f"cannot listen for DNS on {endpoint}: no port free for UDP and TCP")


def _bind_or_explain(
    kind: socket.SocketKind, endpoint: Endpoint, name: str, reuse_port: bool
) -> socket.socket:
    try:
        return _bind(kind, endpoint, reuse_port)
    except OSError as e:
        raise _listen_error(endpoint, name, e) from e


def _listen_error(endpoint: Endpoint, name: str, error: OSError) -> DnsListenError:
    reason = error.strerror or str(error)
    hint = _BIND_HINTS.get(error.errno or 0)
    return DnsListenError(
        f"cannot listen for DNS on {name} {endpoint}: {reason}" + (f" ({hint})" if hint else "")
    )
