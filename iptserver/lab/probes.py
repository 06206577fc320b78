"""Client-side probes the lab runs from inside a namespace: DNS queries and whoami.

They take a socket factory (``netns.socket_in`` bound to a namespace) so the same code
works anywhere, and they raise ``ProbeError`` with what was tried and what happened.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dnslib import EDNS0, QTYPE, RCODE, DNSError, DNSQuestion, DNSRecord

from iptserver.lab.errors import ProbeError
from iptserver.lab.netns import family_of

SocketFactory = Callable[[int, int], socket.socket]  # (family, kind) -> socket
DnsRecordTuple = tuple[str, str, str, int]  # (name, type, value, ttl)


@dataclass(frozen=True)
class DnsAnswer:
    rcode: str  # "NOERROR", "NXDOMAIN", ...
    records: list[DnsRecordTuple]  # the answer section, names without the trailing dot
    transport: str  # "udp", or "tcp" (asked for, or after a truncated UDP answer)
    truncated_udp: bool  # the UDP answer came back with TC set
    message: DNSRecord = field(repr=False)  # the final answer as parsed


def _strip(name: object) -> str:
    return str(name).rstrip(".")


def _records(reply: DNSRecord) -> list[DnsRecordTuple]:
    out = []
    for rr in reply.rr:
        kind = QTYPE.get(rr.rtype)
        value = _strip(rr.rdata) if kind == "CNAME" else str(rr.rdata)
        out.append((_strip(rr.rname), kind, value, int(rr.ttl)))
    return out


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def _matches(query: DNSRecord, reply: DNSRecord) -> bool:
    return bool(reply.header.id == query.header.id and reply.header.qr and reply.q == query.q)


def _udp(make: SocketFactory, server: str, port: int, query: DNSRecord, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    with make(family_of(server), socket.SOCK_DGRAM) as sock:
        sock.connect((server, port))
        sock.send(query.pack())
        while True:  # ignore stray datagrams: only our id and question count
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = sock.recv(65535)
            if _matches(query, DNSRecord.parse(data)):
                return data


def _tcp(make: SocketFactory, server: str, port: int, query: DNSRecord, timeout: float) -> bytes:
    with make(family_of(server), socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((server, port))
        packed = query.pack()
        sock.sendall(struct.pack("!H", len(packed)) + packed)
        (length,) = struct.unpack("!H", _recv_exact(sock, 2))
        return _recv_exact(sock, length)


def dns_query(
    make: SocketFactory,
    server: str,
    name: str,
    rtype: str = "A",
    *,
    port: int = 53,
    tcp: bool = False,
    edns: int | None = None,
    timeout: float = 2.0,
    where: str = "",
) -> DnsAnswer:
    """One query, as a stub resolver sends it: UDP first, TCP if the answer is truncated.

    ``edns``: the UDP size to advertise in an OPT record (None: a classic query, which
    the server must fit into 512 bytes).
    """
    query = DNSRecord(q=DNSQuestion(name, getattr(QTYPE, rtype)))
    query.header.id = random.randrange(1 << 16)
    if edns is not None:
        query.add_ar(EDNS0(udp_len=edns))
    what = f"DNS {name} {rtype} to {server} port {port}{where}"
    truncated = False
    try:
        if not tcp:
            reply = DNSRecord.parse(_udp(make, server, port, query, timeout))
            truncated = bool(reply.header.tc)
            if not truncated:
                return DnsAnswer(
                    RCODE.get(reply.header.rcode), _records(reply), "udp", False, reply
                )
        reply = DNSRecord.parse(_tcp(make, server, port, query, timeout))
    except (OSError, ValueError, DNSError, struct.error) as exc:
        via = "TCP" if tcp or truncated else "UDP"
        raise ProbeError(f"{what} over {via} failed: {type(exc).__name__}: {exc}") from exc
    if not _matches(query, reply):
        raise ProbeError(f"{what}: the TCP answer does not match the query:\n{reply}")
    return DnsAnswer(RCODE.get(reply.header.rcode), _records(reply), "tcp", truncated, reply)


def _connect(make: SocketFactory, address: str, port: int, timeout: float) -> socket.socket:
    sock = make(family_of(address), socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _parse_line(line: bytes, what: str) -> dict[str, Any]:
    try:
        body = json.loads(line)
    except ValueError as exc:
        raise ProbeError(f"{what}: not a whoami answer: {line[:200]!r}") from exc
    if not isinstance(body, dict) or "seen" not in body:
        raise ProbeError(f"{what}: not a whoami answer: {line[:200]!r}")
    return body


def whoami(make: SocketFactory, address: str, port: int, timeout: float) -> dict[str, Any]:
    """What the whoami server at ``address`` saw: ``{"seen": ..., "local": ...}``."""
    try:
        with _connect(make, address, port, timeout) as sock:
            sock.sendall(b"whoami\n")
            line = sock.makefile("rb").readline()
    except OSError as exc:
        raise ProbeError(f"whoami {address} port {port}: {type(exc).__name__}: {exc}") from exc
    return _parse_line(line, f"whoami {address} port {port}")


class HeldConnection:
    """A whoami connection that streams one line a second (``hold N``) until closed.

    ``first`` is the first line. ``next()`` returns the next line's JSON; it raises
    ProbeError if the connection breaks, ends, or goes silent for ``timeout`` seconds (the
    server writes every second). Iterating yields the lines left until a clean close.
    """

    def __init__(
        self, make: SocketFactory, address: str, seconds: int, port: int, timeout: float
    ) -> None:
        self.what = f"held connection to {address} port {port}"
        try:
            self.sock = _connect(make, address, port, timeout)
            self.sock.sendall(f"hold {seconds}\n".encode())
        except OSError as exc:
            raise ProbeError(f"{self.what}: {type(exc).__name__}: {exc}") from exc
        self.file = self.sock.makefile("rb")
        try:
            self.first = self.next()
        except ProbeError:
            self.close()
            raise

    def _readline(self) -> bytes:
        try:
            return self.file.readline()
        except OSError as exc:
            raise ProbeError(f"{self.what}: {type(exc).__name__}: {exc}") from exc

    def next(self) -> dict[str, Any]:
        line = self._readline()
        if not line:
            raise ProbeError(f"{self.what}: closed by the far side")
        return _parse_line(line, self.what)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The remaining lines, until the server closes after the last one."""
        while line := self._readline():
            yield _parse_line(line, self.what)

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> HeldConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
