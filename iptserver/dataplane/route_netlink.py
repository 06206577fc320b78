"""Routes written and read many at a time, with rtnetlink messages of our own.

``send: policy`` puts a country's networks in a table (a RU/GB/US schema: 133,000
routes), and zebra copies them into ``main``. Through pyroute2 each written route is a
round trip and a generic encoder (about a millisecond each with debug logging, minutes
for the lot, with the kernel thread held), and every dump parses every route of every
table (~150 µs each: listing one small table took a minute). Here ``BATCH`` messages
go in one datagram, encoded with ``struct``, their acknowledgements are read back
together, and a dump asks the kernel to filter (``NETLINK_GET_STRICT_CHK``: by table,
protocol and interface), so it costs only the routes it returns (a few µs each).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from iptserver.errors import DataplaneError

if TYPE_CHECKING:
    from iptserver.schema.values import IPNetwork

BATCH = 1000
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
NLM_F_DUMP = 0x300
NLMSG_ERROR, NLMSG_DONE = 0x2, 0x3
SOL_NETLINK, NETLINK_GET_STRICT_CHK = 270, 12
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
RTN_UNICAST, RTN_BLACKHOLE = 1, 6
RT_SCOPE_UNIVERSE, RT_SCOPE_NOWHERE = 0, 255
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol,
# scope, type, flags
_ATTR = struct.Struct("=HH")
_GONE = {errno.ESRCH, errno.ENOENT}

# A route to write: the network and the interface index it leaves by (None: blackhole).
Route = tuple["IPNetwork", int | None]


@dataclass(frozen=True, slots=True)
class Listed:
    """A route as a dump gives it."""

    network: IPNetwork
    kind: int  # RTN_UNICAST, RTN_BLACKHOLE, ...
    protocol: int
    oif: int | None  # None for a blackhole
    gateway: str | None
    priority: int


def _attr(kind: int, payload: bytes) -> bytes:
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


class RouteWire:
    """A rtnetlink socket of its own; one call at a time."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def replace(self, table: int, protocol: int, routes: Sequence[Route]) -> list[str]:
        """Add or replace each route; the problems, one per route the kernel refused."""
        flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE
        messages = []
        for network, oif in routes:
            kind = RTN_BLACKHOLE if oif is None else RTN_UNICAST
            attrs = _attr(RTA_OIF, struct.pack("=I", oif)) if oif is not None else b""
            messages.append(
                (network, RTM_NEWROUTE, flags, self._body(network, table, protocol, kind, attrs))
            )
        return self._send(messages, fine=set())

    def delete(self, table: int, protocol: int, networks: Sequence[IPNetwork]) -> list[str]:
        """Delete each route of ``protocol`` (any type or scope); gone ones are fine."""
        messages = [
            (
                network,
                RTM_DELROUTE,
                NLM_F_REQUEST | NLM_F_ACK,
                self._body(network, table, protocol, 0, b"", scope=RT_SCOPE_NOWHERE),
            )
            for network in networks
        ]
        return self._send(messages, fine=_GONE | {errno.ENODEV})

    def dump(
        self,
        version: int,
        table: int,
        protocol: int = 0,
        oif: int | None = None,
        *,
        defaults: bool = False,
    ) -> list[Listed]:
        """The routes of ``table`` (of ``protocol`` and out of ``oif``, when given): the
        kernel filters, so the other tables' routes cost nothing. ``defaults``: only the
        default routes (the rest are skipped unparsed: main may hold a country's routes).
        A table that does not exist has none."""
        family = FAMILIES[version]
        header = _RTMSG.pack(family, 0, 0, 0, table if table < 256 else 0, protocol, 0, 0, 0)
        attrs = _attr(RTA_TABLE, struct.pack("=I", table))
        if oif is not None:
            attrs += _attr(RTA_OIF, struct.pack("=I", oif))
        body = header + attrs
        self._seq += 1
        request = _HEADER.pack(
            _HEADER.size + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0
        )
        try:
            self._sock.send(request + body)
            found: list[Listed] = []
            while self._dumped(self._sock.recv(1 << 20), self._seq, found, defaults):
                pass
        except OSError as e:
            if e.errno == errno.ENOENT:  # an IPv4 table nothing was ever put in
                return []
            raise DataplaneError(f"cannot list routing table {table}: {e}") from e
        return found

    @staticmethod
    def _dumped(data: bytes, seq: int, found: list[Listed], defaults: bool) -> bool:
        """Parse one datagram of a dump into ``found``; False once the dump is done."""
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _, got, _ = _HEADER.unpack_from(data, offset)
            end = offset + length
            if got != seq:
                offset += max((length + 3) & ~3, _HEADER.size)
                continue
            if kind == NLMSG_DONE:
                return False
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, offset + _HEADER.size)
                if code:
                    raise OSError(-code, os.strerror(-code))
                return False
            if kind == RTM_NEWROUTE and not (defaults and data[offset + _HEADER.size + 1]):
                found.append(_listed(data, offset + _HEADER.size, end))
            offset += max((length + 3) & ~3, _HEADER.size)
        return True

    @staticmethod
    def _body(
        network: IPNetwork,
        table: int,
        protocol: int,
        kind: int,
        attrs: bytes,
        scope: int = RT_SCOPE_UNIVERSE,
    ) -> bytes:
        header = _RTMSG.pack(
            FAMILIES[network.version],
            network.prefixlen,
            0,
            0,
            table if table < 256 else 0,
            protocol,
            scope,
            kind,
            0,
        )
        return (
            header
            + _attr(RTA_DST, network.network_address.packed)
            + _attr(RTA_TABLE, struct.pack("=I", table))
            + attrs
        )

    def _send(self, messages: list[tuple[IPNetwork, int, int, bytes]], fine: set[int]) -> list[str]:
        problems = []
        for start in range(0, len(messages), BATCH):
            chunk = messages[start : start + BATCH]
            waiting: dict[int, IPNetwork] = {}
            datagram = bytearray()
            for network, kind, flags, body in chunk:
                self._seq += 1
                waiting[self._seq] = network
                datagram += _HEADER.pack(_HEADER.size + len(body), kind, flags, self._seq, 0)
                datagram += body
            try:
                self._sock.send(bytes(datagram))
                while waiting:
                    problems += self._acks(waiting, fine)
            except OSError as e:
                raise DataplaneError(f"cannot write routes: {e}") from e
        return problems

    def _acks(self, waiting: dict[int, IPNetwork], fine: set[int]) -> list[str]:
        """Read acknowledgements; remove them from ``waiting``; the refusals."""
        data = self._sock.recv(1 << 20)
        problems = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _, seq, _ = _HEADER.unpack_from(data, offset)
            if kind == NLMSG_ERROR and seq in waiting:
                network = waiting.pop(seq)
                (code,) = struct.unpack_from("=i", data, offset + _HEADER.size)
                if code and -code not in fine:
                    problems.append(f"{network}: {os.strerror(-code)}")
            offset += max((length + 3) & ~3, _HEADER.size)
        return problems


def _listed(data: bytes, start: int, end: int) -> Listed:
    family, dst_len, _, _, _, protocol, _, kind, _ = _RTMSG.unpack_from(data, start)
    width = 4 if family == socket.AF_INET else 16
    dst = b"\0" * width
    oif: int | None = None
    gateway: str | None = None
    priority = 0
    offset = start + _RTMSG.size
    while offset + _ATTR.size <= end:
        size, attr = _ATTR.unpack_from(data, offset)
        if size < _ATTR.size:
            break
        payload = data[offset + _ATTR.size : offset + size]
        if attr == RTA_DST:
            dst = payload
        elif attr == RTA_OIF:
            (oif,) = struct.unpack("=I", payload)
        elif attr == RTA_GATEWAY:
            gateway = str(ipaddress.ip_address(payload))
        elif attr == RTA_PRIORITY:
            (priority,) = struct.unpack("=I", payload)
        offset += (size + 3) & ~3
    if kind == RTN_BLACKHOLE:
        oif = None  # IPv6 names lo
    network = ipaddress.ip_network((dst, dst_len))
    return Listed(network, kind, protocol, oif, gateway, priority)
