"""Forwarding a query to the upstream resolvers, with failover.

Each try gets a random query ID, over UDP on a connected socket shared with a few other
queries and replaced every few dozen (``udp_pool``), over TCP on a fresh connection; a
reply counts only if it comes from the upstream's address and port (a connected socket),
carries that ID and echoes the question. Anything else is counted, logged and
ignored while the try's time lasts: spoofed or stray packets cannot end a query.
Upstreams are tried in order, starting with the last one that answered, so a dead
first resolver costs one timeout, not one per query.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from dnslib import QTYPE

from iptserver.dns.answers import with_id
from iptserver.dns.counters import DnsCounters
from iptserver.dns.throttle import ThrottledLog
from iptserver.dns.udp_pool import UdpPool
from iptserver.dns.wire import (
    RCODE_REFUSED,
    TCP_LENGTH_SIZE,
    Message,
    Question,
    WireError,
    parse_message,
    tcp_frame,
    tcp_length,
)
from iptserver.schema.values import Endpoint

log = logging.getLogger(__name__)


class Transport(enum.Enum):
    UDP = "udp"
    TCP = "tcp"


class UpstreamFailure(Exception):
    """No upstream gave an answer in time; the message sums up what each try met."""


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    wire: bytes  # as the upstream sent it (with the ID we chose)
    message: Message
    upstream: Endpoint
    transport: Transport


class _Refused(Exception):
    """The upstream answered REFUSED: it will not serve us, ask the next one."""


class UpstreamClient:
    def __init__(
        self, upstreams: Sequence[Endpoint], *, try_timeout: float, counters: DnsCounters
    ) -> None:
        if not upstreams:
            raise ValueError("at least one upstream resolver is needed")
        self._upstreams = tuple(upstreams)
        self._try_timeout = try_timeout
        self._counters = counters
        self._preferred = 0
        self._log = ThrottledLog(log)
        self._pools: dict[Endpoint, UdpPool] = {}

    def close(self) -> None:
        """Close the UDP sockets; queries still waiting on them fail."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def _pool(self, upstream: Endpoint) -> UdpPool:
        pool = self._pools.get(upstream)
        if pool is None:
            pool = self._pools[upstream] = UdpPool(
                upstream,
                lambda reply, query_id, question: self._match(reply, query_id, question, upstream),
                lambda reply, why: self._ignored(reply, upstream, why),
            )
        return pool

    async def query(
        self, wire: bytes, question: Question, *, tcp: bool, deadline: float
    ) -> UpstreamAnswer:
        """The first matching answer from the upstreams, by ``deadline`` (loop time).

        UDP first unless ``tcp``; a truncated UDP answer is fetched again over TCP from
        the same upstream. Raises :class:`UpstreamFailure` when no upstream answers.
        """
        loop = asyncio.get_running_loop()
        failures: list[str] = []
        first = self._preferred
        for step in range(len(self._upstreams)):
            index = (first + step) % len(self._upstreams)
            upstream = self._upstreams[index]
            if deadline - loop.time() <= 0:
                failures.append(f"{upstream}: not tried, the query's time was up")
                break
            last = step == len(self._upstreams) - 1
            try:
                answer = await self._try(upstream, wire, question, tcp=tcp, until=(deadline, last))
            except TimeoutError:
                self._counters.upstream_timeouts += 1
                failures.append(f"{upstream}: no answer in time")
            except _Refused:
                self._counters.upstream_errors += 1
                failures.append(f"{upstream}: REFUSED")
            except (OSError, WireError) as e:  # refused port, reset, unreachable, bad frame
                self._counters.upstream_errors += 1
                failures.append(f"{upstream}: {_reason(e)}")
            else:
                if index != self._preferred:
                    log.info("upstream %s answers; asking it first from now on", upstream)
                    self._preferred = index
                return answer
            args = (
                upstream,
                question.name or ".",
                QTYPE.get(question.qtype, question.qtype),
                failures[-1].partition(": ")[2],
                "no upstream left" if last else "trying the next one",
            )
            self._log.warning(
                str(upstream),
                "upstream resolver %s failed for %s %s (%s), %s. Check that it runs and that "
                "this host reaches it",
                *args,
            )
        raise UpstreamFailure("; ".join(failures))

    def _ends(self, deadline: float, last: bool) -> float:
        """When a try must be over: the last upstream of the list gets all the time left
        (one upstream gets the query's whole timeout), the others a try's."""
        if last:
            return deadline
        return min(asyncio.get_running_loop().time() + self._try_timeout, deadline)

    async def _try(
        self,
        upstream: Endpoint,
        wire: bytes,
        question: Question,
        *,
        tcp: bool,
        until: tuple[float, bool],
    ) -> UpstreamAnswer:
        transport = Transport.TCP if tcp else Transport.UDP
        ends = self._ends(*until)
        if tcp:
            async with asyncio.timeout_at(ends):
                message, reply = await self._tcp(upstream, wire, question)
        else:
            message, reply = await self._udp(upstream, wire, question, ends)
        if message.header.truncated and not tcp:
            self._counters.upstream_tcp_retries += 1
            log.debug("upstream %s truncated %s; asking again over TCP", upstream, question.name)
            transport = Transport.TCP
            async with asyncio.timeout_at(self._ends(*until)):
                message, reply = await self._tcp(upstream, wire, question)
        if message.header.rcode == RCODE_REFUSED:
            raise _Refused
        return UpstreamAnswer(reply, message, upstream, transport)

    async def _udp(
        self, upstream: Endpoint, wire: bytes, question: Question, ends: float
    ) -> tuple[Message, bytes]:
        """Over UDP, sent again after each try's time while time is left (a datagram lost
        on the way is not the upstream's silence); an answer to any of the sends counts."""
        return await self._pool(upstream).exchange(wire, question, ends, self._try_timeout)

    async def _tcp(
        self, upstream: Endpoint, wire: bytes, question: Question
    ) -> tuple[Message, bytes]:
        """Send the query on a fresh TCP connection; read replies until one matches."""
        loop = asyncio.get_running_loop()
        query_id = secrets.randbits(16)
        with socket.socket(_family(upstream), socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, (str(upstream.address), upstream.port))
            await loop.sock_sendall(sock, tcp_frame(with_id(wire, query_id)))
            while True:
                length = tcp_length(await _recv_exactly(sock, TCP_LENGTH_SIZE))
                reply = await _recv_exactly(sock, length)
                message = self._match(reply, query_id, question, upstream)
                if message is not None:
                    return message, reply

    def _match(
        self, reply: bytes, query_id: int, question: Question, upstream: Endpoint
    ) -> Message | None:
        """The reply's message if it answers our query, else None (counted, logged)."""
        try:
            message = parse_message(reply)
        except WireError as e:
            why = f"unreadable: {e}"
        else:
            header = message.header
            if header.id != query_id:
                why = f"ID {header.id} is not {query_id}"
            elif not header.is_response:
                why = "not a response"
            elif message.question != question:
                why = f"question {message.question} is not {question}"
            else:
                return message
        self._ignored(reply, upstream, why)
        return None

    def _ignored(self, reply: bytes, upstream: Endpoint, why: str) -> None:
        self._counters.upstream_errors += 1
        log.debug("ignored a %d-byte reply from %s: %s", len(reply), upstream, why)


async def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise ConnectionResetError(0, "the upstream closed the TCP connection mid-answer")
        data += chunk
    return bytes(data)


def _family(endpoint: Endpoint) -> socket.AddressFamily:
    return socket.AF_INET6 if endpoint.address.version == 6 else socket.AF_INET


def _reason(error: OSError | WireError) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error)
