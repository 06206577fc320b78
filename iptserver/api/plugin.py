"""The recursor plugin's datagram endpoint: one answer per UDP datagram, one reply.

Why a second way in besides ``POST /v1/answers``: a LuaSocket call blocks the
recursor's whole worker thread (every query it holds) until iptserver replies, so over
HTTP the recursor routes one answer per thread at a time. The recursor's own Lua
follow-up ``udpQueryResponse`` sends a datagram and parks only the query that sent it,
the way the recursor waits for an authority; the datagram is also cheaper to handle than
an HTTP request. The endpoint listens on the HTTP API's address and port number, over UDP.
The answer is routed by the same ``Learner`` and checked by the same rules as the API
(``answers.py``).

A request (ASCII, four lines, each ending in a newline)::

    IPT1 <id> <ttl> [from=<client address>] [shared]
    <token, or an empty line when the API has none>
    <qname> [<name in the CNAME chain> ...]
    <address> [<address> ...]

The reply: ``IPT1 <id> <ttl>`` (the TTL clients may keep the answer), or
``IPT1 <id> ERR <message>`` (``-`` for an id that could not be read; not sent when it
would be longer than the datagram it answers). ``shared``: the sender's port may be
another socket's too (the recursor's udpQueryResponse), so replies to it are spaced
(REPLY_GAP); without it every reply goes at once. Names are
presentation form (the recursor escapes odd bytes as ``\\DDD``), so spaces separate.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
from typing import Any

from iptserver.api import answers
from iptserver.api.answers import AnswerRequest, BadRequest
from iptserver.errors import DataplaneError
from iptserver.learning import Learner, Routed
from iptserver.schema.values import IPAddress

log = logging.getLogger(__name__)

MAGIC = "IPT1"
# The largest answer the limits in answers.py allow is about 25 KiB in this format.
MAX_DATAGRAM = 32 * 1024
MAX_ID = 2**63 - 1
MAX_IN_FLIGHT = 4096  # answers being routed at once; more are refused, not queued
# Seconds between two replies to one source address and port when the second request
# came before the first reply left. The recursor sends each datagram from a new socket
# bound with SO_REUSEADDR, so two of its queries in flight may share a port, and the one
# socket that gets the first reply stops reading: a second reply sent at once would be
# lost with it and its query would wait the whole network-timeout. Sent this much
# later, the second reaches the socket still open. (A reply that reaches the other
# query is caught by its id, and the plugin asks again.) A request that came after the
# last reply left is from a new socket that merely got the port again: no wait.
REPLY_GAP = 0.02
# The first line's fourth word by which a request asks for that spacing (the plugin's udp
# transport does); a client on a port of its own (the ffi transport, a test, a tool that
# sends many requests from one socket) leaves it out and gets every reply at once.
SHARED = "shared"
FROM = "from="
_SHARED_SUFFIX = b" " + SHARED.encode()


class BadDatagram(BadRequest):
    """A request that breaks the format: the message goes back to the sender, with the
    id when it could be read ("-" when not)."""

    def __init__(self, request_id: str, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id


def parse_request(data: bytes, token: str | None) -> AnswerRequest:
    """Check a datagram field by field; raises BadDatagram saying what is wrong."""
    if len(data) > MAX_DATAGRAM:
        raise BadDatagram("-", f"the datagram is larger than {MAX_DATAGRAM} bytes")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise BadDatagram("-", "the datagram is not ASCII text") from None
    lines = text.split("\n")
    if len(lines) != 5 or lines[4] != "":
        raise BadDatagram("-", "expected 4 lines, each ending in a newline")
    header, given_token, names_line, addresses_line = lines[:4]
    parts = header.split(" ")
    options = parts[3:]
    if options[-1:] == [SHARED]:
        options.pop()
    client = options.pop(0)[len(FROM) :] if options[:1] and options[0].startswith(FROM) else None
    if len(parts) < 3 or parts[0] != MAGIC or options:
        raise BadDatagram("-", f"the first line must be '{MAGIC} ID TTL [{FROM}ADDR] [{SHARED}]'")
    request_id = parts[1]
    number = _number(request_id)
    if number is None or number > MAX_ID:
        raise BadDatagram("-", f"the id must be a number from 0 to {MAX_ID}")
    if token is not None and not hmac.compare_digest(given_token.encode(), token.encode()):
        raise BadDatagram(request_id, "a valid token is required on the second line")
    try:
        ttl = answers.check_ttl(_number(parts[2]))
        raw_names = names_line.split(" ")
        answers.check_chain_length(len(raw_names) - 1)
        names = tuple(answers.check_name(raw) for raw in raw_names)
        raw_addresses = addresses_line.split(" ")
        answers.check_address_count(len(raw_addresses))
        addresses = tuple(answers.check_address(raw) for raw in raw_addresses)
        if client is not None:
            client = str(answers.check_address(client, "the client (from=)"))
    except BadRequest as e:
        raise BadDatagram(request_id, str(e)) from None
    return AnswerRequest(names, addresses, ttl, request_id, client)


def shares_port(data: bytes) -> bool:
    """Whether the request says its sender's port may be shared (the first line ends in
    SHARED): then its replies are spaced (REPLY_GAP)."""
    return data.partition(b"\n")[0].endswith(_SHARED_SUFFIX)


def format_reply(request_id: str, ttl: int) -> bytes:
    return f"{MAGIC} {request_id} {ttl}\n".encode()


def format_error(request_id: str, message: str) -> bytes:
    # One line, ASCII, short: the plugin logs it as it is.
    clean = "".join(c if " " <= c <= "~" else "?" for c in message)[:400]
    return f"{MAGIC} {request_id} ERR {clean}\n".encode()


def _number(text: str) -> int | None:
    """A plain decimal of at most 19 digits (no sign, no spaces), or None."""
    return int(text) if 0 < len(text) <= 19 and text.isdigit() else None


class PluginEndpoint:
    """Routes each datagram's answer and replies to its sender; never raises.

    A plain non-blocking socket the loop watches, read until empty at each wake-up:
    asyncio's datagram transport reads one datagram per wake-up into a fresh 256 KiB
    buffer, which cost more than routing the answer (bench/recursor.py). What one
    wake-up read is answered right there when the kernel can take its entries at once
    (one write for all of them): a task, a future and the Batcher's hop cost each answer
    more than routing it. Otherwise (the kernel busy, the export table on) each answer
    waits for its entries in a task, as the HTTP API's do.
    """

    READS_PER_WAKEUP = 64  # then the rest of the loop gets its turn

    def __init__(self, learner: Learner, token: str | None, sock: socket.socket) -> None:
        self._learner = learner
        self._token = token
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_reply: dict[Any, float] = {}  # source -> when it was last replied to
        # For /metrics.
        self.datagrams = 0  # received
        self.rejected = 0  # datagrams that broke the format
        self.failed = 0  # answers not routed: the kernel refused, too busy, a bug
        self.spaced = 0  # replies held back by REPLY_GAP: ports the recursor reused at once
        self._loop.add_reader(sock, self._readable)

    @property
    def port(self) -> int:
        port: int = self._sock.getsockname()[1]
        return port

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock)
            self._sock.close()

    def _readable(self) -> None:
        # All that is waiting is read before any of it is answered: each request then
        # counts as come before every reply this wake-up sends (REPLY_GAP), and their
        # entries go to the kernel in one write.
        arrived = self._loop.time()
        received = []
        for _ in range(self.READS_PER_WAKEUP):
            try:
                received.append(self._sock.recvfrom(MAX_DATAGRAM + 1))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # an ICMP error queued on the socket: nothing to do
                log.debug("plugin endpoint: %s", e)
        self.datagrams_received(received, arrived)

    def datagrams_received(self, received: list[tuple[bytes, Any]], arrived: float) -> None:
        """Answer each (datagram, sender) at once when the learner can route them all
        without waiting (nothing to write, or the kernel idle), else each from a task
        once the kernel has its entries. ``arrived``: when they came (loop time)."""
        self.datagrams += len(received)
        decided: list[tuple[AnswerRequest, Routed, Any, float | None]] = []
        for data, addr in received:
            since = arrived if shares_port(data) else None
            request = self._request(data, addr, since)
            if request is None:
                continue
            try:
                routed = self._learner.route(
                    request.names, request.addresses, request.ttl, request.client
                )
            except Exception as e:
                self._send(self._failure(request, e), addr, since)
                continue
            decided.append((request, routed, addr, since))
        if not decided:
            return
        try:
            written = self._learner.write_now([routed for _, routed, _, _ in decided])
        except Exception as e:  # the kernel refused the entries they were to share
            for request, routed, addr, since in decided:
                if routed.pending:
                    self._send(self._failure(request, e), addr, since)
                else:
                    self._send(format_reply(request.request_id, routed.ttl), addr, since)
            return
        for request, routed, addr, since in decided:
            if written or not routed.pending:
                self._send(format_reply(request.request_id, routed.ttl), addr, since)
            else:
                task = self._loop.create_task(self._write(request, routed, addr, since))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _request(self, data: bytes, addr: Any, since: float | None) -> AnswerRequest | None:
        """The datagram's request, or None when it was refused (with an error reply)."""
        try:
            request = parse_request(data, self._token)
        except BadDatagram as e:
            self.rejected += 1
            reply = format_error(e.request_id, str(e))
            # Never more bytes out than in: a spoofed source gains nothing by reflection
            # (the plugin's own requests are always longer than any reply).
            if len(reply) <= len(data):
                self._send(reply, addr, since)
            else:
                log.debug(
                    "plugin endpoint: %s from %s (not answered: shorter than the reply)", e, addr
                )
            return None
        if len(self._tasks) >= MAX_IN_FLIGHT:
            self.failed += 1
            busy = format_error(request.request_id, "busy: too many answers at once")
            self._send(busy, addr, since)
            return None
        return request

    async def _write(
        self, request: AnswerRequest, routed: Routed, addr: Any, since: float | None
    ) -> None:
        try:
            await self._learner.write(routed)
        except Exception as e:
            reply = self._failure(request, e)
        else:
            reply = format_reply(request.request_id, routed.ttl)
        self._send(reply, addr, since)

    def _failure(self, request: AnswerRequest, error: Exception) -> bytes:
        """The error reply for an answer the learner could not route (counted, logged)."""
        self.failed += 1
        if isinstance(error, DataplaneError):
            log.error("answer for %s not routed: %s", request.names[0], error)
            return format_error(request.request_id, f"the kernel refused the routes: {error}")
        log.error("routing the plugin's answer for %s failed", request.names[0], exc_info=error)
        return format_error(request.request_id, "internal error (logged)")

    def _send(self, reply: bytes, addr: Any, since: float | None) -> None:
        """``since``: when the request came (loop time) from a port that may be shared
        (its replies are spaced by REPLY_GAP); None: the sender's own port, reply at once."""
        if since is None:
            self._sendto(reply, addr)
            return
        now = self._loop.time()
        last = self._last_reply.get(addr)
        if last is not None and last >= since and now - last < REPLY_GAP:
            self.spaced += 1
            self._last_reply[addr] = last + REPLY_GAP
            self._loop.call_at(last + REPLY_GAP, self._sendto, reply, addr)
            return
        if len(self._last_reply) >= 1024:  # only the last REPLY_GAP matters
            self._last_reply = {a: t for a, t in self._last_reply.items() if now - t < REPLY_GAP}
        self._last_reply[addr] = now
        self._sendto(reply, addr)

    def _sendto(self, reply: bytes, addr: Any) -> None:
        if self._sock.fileno() < 0:
            return
        try:
            self._sock.sendto(reply, addr)
        except OSError as e:  # a full buffer (the plugin then waits its bound) or a gone peer
            log.debug("plugin endpoint: no reply to %s: %s", addr, e)


async def start_plugin_endpoint(
    learner: Learner, address: IPAddress, port: int, token: str | None
) -> PluginEndpoint:
    """Listen on ``address``:``port`` over UDP; raises OSError when it cannot."""
    sock = socket.socket(
        socket.AF_INET6 if address.version == 6 else socket.AF_INET, socket.SOCK_DGRAM
    )
    try:
        sock.setblocking(False)
        sock.bind((str(address), port))
        return PluginEndpoint(learner, token, sock)
    except BaseException:
        sock.close()
        raise
