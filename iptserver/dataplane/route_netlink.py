"""Routes written many at a time: the rtnetlink messages for a table of exported routes.

``send: policy`` puts a country's networks in a table (a RU/GB/US schema: 133,000
routes). Through pyroute2 each route is a round trip and a generic encoder (about a
millisecond each with debug logging, minutes for the lot, with the kernel thread held);
here ``BATCH`` messages go in one datagram, encoded with ``struct``, and their
acknowledgements are read back together (~5 µs a route).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from iptserver.errors import DataplaneError

if TYPE_CHECKING:
    from iptserver.schema.values import IPNetwork

BATCH = 1000
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
NLMSG_ERROR = 0x2
RTA_DST, RTA_OIF, RTA_TABLE = 1, 4, 15
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


def _attr(kind: int, payload: bytes) -> bytes:
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


class RouteWire:
    """A rtnetlink socket of its own; one call at a time."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
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
