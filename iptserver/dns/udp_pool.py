"""Connected UDP sockets to one upstream, shared by the queries in flight.

A socket per query costs more than the query itself (socket, connect, register with the
event loop, unregister, close: a few system calls each). Here a socket carries up to
``USES`` queries, each with a random ID unused on that socket, and is then retired and
closed once its last reply is in, so source ports still change every few queries. The
socket is connected: the kernel drops datagrams from any other address or port. A reply
is taken only when ``match`` accepts it (ID, response bit, question); anything else is
left to ``match`` (or ``ignore``, for an ID nobody waits for) to count, and the query
goes on waiting.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import cast

from iptserver.dns.answers import with_id
from iptserver.dns.wire import Message, Question
from iptserver.schema.values import Endpoint

USES = 64  # queries a socket carries before it is retired
SOCKETS = 4  # sockets taking new queries at once
_RANDOM_BYTES = 4096  # read from the kernel at once: one system call per 2,048 IDs

# match(reply, query_id, question) -> the reply's message, or None to ignore it
Match = Callable[[bytes, int, Question], Message | None]
Ignore = Callable[[bytes, str], None]  # ignore(reply, why): counted and logged
Waiter = tuple[Question, "asyncio.Future[tuple[Message, bytes]]"]


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, pool: UdpPool) -> None:
        self._pool = pool
        self.transport: asyncio.DatagramTransport | None = None
        # Done once connected (the slot is taken before: concurrent queries share it).
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.connecting: asyncio.Future[None] | None = None  # the task that connects it
        self.waiting: dict[int, Waiter] = {}
        self.uses = 0
        self.retired = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # not a subclass here

    def datagram_received(self, data: bytes, addr: object) -> None:
        query_id = int.from_bytes(data[:2], "big")
        waiter = self.waiting.get(query_id) if len(data) >= 2 else None
        if waiter is None:
            self._pool.ignore(data, "no query waits for its ID")
            return
        question, future = waiter
        message = self._pool.match(data, query_id, question)
        if message is not None and not future.done():
            del self.waiting[query_id]
            future.set_result((message, data))
            self._close_if_done()

    def error_received(self, exc: Exception) -> None:
        """An ICMP error (port unreachable): every query on this socket fails at once."""
        for _, future in self.waiting.values():
            if not future.done():
                future.set_exception(exc)
        self.waiting.clear()
        self._pool.retire(self)
        self._close_if_done()

    def connection_lost(self, exc: Exception | None) -> None:
        self._pool.discard(self)
        error = exc or ConnectionResetError(0, "the upstream socket was closed")
        for _, future in self.waiting.values():
            if not future.done():
                future.set_exception(error)
        self.waiting.clear()

    def release(self, query_id: int) -> None:
        """The query gave up (timeout, cancelled): forget its ID."""
        self.waiting.pop(query_id, None)
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self.retired and not self.waiting and self.transport is not None:
            self.transport.close()
            self.transport = None


class QueryIds:
    """Random 16-bit query IDs from the kernel's random source, read in bulk."""

    def __init__(self) -> None:
        self._ids: list[int] = []

    def next(self) -> int:
        if not self._ids:
            data = os.urandom(_RANDOM_BYTES)
            self._ids = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        return self._ids.pop()


def _expire(future: asyncio.Future[tuple[Message, bytes]]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class UdpPool:
    """``await exchange(wire, question, deadline)``: the matching reply to ``wire`` (its
    ID replaced by a random one), or TimeoutError at ``deadline`` (loop time)."""

    def __init__(self, upstream: Endpoint, match: Match, ignore: Ignore) -> None:
        self.upstream = upstream
        self.match = match
        self.ignore = ignore
        self._open: list[_Socket] = []  # taking new queries
        self._all: set[_Socket] = set()
        self._next = 0
        self._ids = QueryIds()

    async def exchange(
        self, wire: bytes, question: Question, deadline: float, resend: float | None = None
    ) -> tuple[Message, bytes]:
        """``resend``: seconds after which the same datagram (same socket and ID) is sent
        again while no answer came, until ``deadline``."""
        sock = await self._socket()
        assert sock.transport is not None
        query_id = self._ids.next()
        while query_id in sock.waiting:
            query_id = self._ids.next()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Message, bytes]] = loop.create_future()
        sock.waiting[query_id] = (question, future)
        sock.uses += 1
        if sock.uses >= USES:
            self.retire(sock)
        timer = loop.call_at(deadline, _expire, future)
        datagram = with_id(wire, query_id)
        again: asyncio.TimerHandle | None = None

        def send() -> None:
            nonlocal again
            if sock.transport is None or future.done():
                return
            sock.transport.sendto(datagram)
            if resend is not None and loop.time() + resend < deadline:
                again = loop.call_later(resend, send)

        try:
            send()
            return await future
        finally:
            timer.cancel()
            if again is not None:
                again.cancel()
            sock.release(query_id)

    async def _socket(self) -> _Socket:
        if len(self._open) < SOCKETS:
            sock = _Socket(self)
            self._open.append(sock)
            self._all.add(sock)
            sock.connecting = asyncio.ensure_future(self._connect(sock))
        self._next = (self._next + 1) % len(self._open)
        sock = self._open[self._next]
        await sock.connected  # at once but while it is being made
        return sock

    async def _connect(self, sock: _Socket) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if self.upstream.address.version == 6 else socket.AF_INET
        try:
            await loop.create_datagram_endpoint(
                lambda: sock,
                remote_addr=(str(self.upstream.address), self.upstream.port),
                family=family,
            )
        except OSError as e:
            self.discard(sock)
            sock.connected.set_exception(e)
            sock.connected.exception()  # retrieved: the waiters each get it too
        else:
            sock.connected.set_result(None)

    def retire(self, sock: _Socket) -> None:
        """No new queries on ``sock``; it closes once its last one is done."""
        sock.retired = True
        if sock in self._open:
            self._open.remove(sock)

    def discard(self, sock: _Socket) -> None:
        self._all.discard(sock)
        if sock in self._open:
            self._open.remove(sock)

    def close(self) -> None:
        for sock in list(self._all):
            sock.retired = True
            if sock.transport is not None:
                sock.transport.close()
        self._open.clear()
