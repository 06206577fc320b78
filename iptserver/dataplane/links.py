"""Interfaces coming and going, as the kernel announces them (the rtnetlink link group).

A WireGuard interface that goes down or is deleted takes every route through it along;
one that is made anew or brought up again comes back empty. The daemon puts its exits'
routes back the moment the kernel says the interface is up, with no reload and no wait
for a health round: an exit tunnel restarted by its container, or made after iptserver
started, carries traffic again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable, Iterable, Iterator

from pyroute2 import IPRoute

from iptserver.dataplane.route_netlink import RouteWire
from iptserver.schema.values import IPNetwork

log = logging.getLogger(__name__)

RTMGRP_LINK = 0x1
RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE = 0x40, 0x400
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type
RTA_TABLE = 15
MAIN_TABLE = 254
IFLA_IFNAME = 3
IFF_UP = 0x1
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
RTATTR = struct.Struct("=HH")  # length, type
RCVBUF = 1 << 20
SIOCGIFFLAGS = 0x8913
IFREQ = struct.Struct("=16sH14x")  # name, flags


def _aligned(length: int) -> int:
    return (length + 3) & ~3


def messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """The netlink messages of one datagram: (type, body start, end)."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size or offset + length > len(data):
            return
        yield kind, offset + NLMSG_HEADER.size, offset + length
        offset += _aligned(length)


def attributes(data: bytes, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """The (type, value) attributes between ``start`` and ``end``."""
    while start + RTATTR.size <= end:
        size, kind = RTATTR.unpack_from(data, start)
        if size < RTATTR.size or start + size > end:
            return
        yield kind, data[start + RTATTR.size : start + size]
        start += _aligned(size)


def link_events(data: bytes) -> Iterator[tuple[str, int | None]]:
    """(interface, its index while it is up, else None) for each link message."""
    for kind, body, end in messages(data):
        if kind not in (RTM_NEWLINK, RTM_DELLINK) or body + IFINFOMSG.size > end:
            continue
        _, _, index, flags, _ = IFINFOMSG.unpack_from(data, body)
        for attr, value in attributes(data, body + IFINFOMSG.size, end):
            if attr == IFLA_IFNAME:
                up = kind == RTM_NEWLINK and flags & IFF_UP
                yield value.rstrip(b"\0").decode(errors="replace"), index if up else None
                break


def main_default_changed(data: bytes) -> bool:
    """Whether a route message of ``data`` adds or deletes a default route of ``main``
    (what the host gateway exits' tables copy)."""
    for kind, body, end in messages(data):
        if kind not in (RTM_NEWROUTE, RTM_DELROUTE) or body + RTMSG.size > end:
            continue
        _, dst_len, _, _, table, _, _, _, _ = RTMSG.unpack_from(data, body)
        for attr, value in attributes(data, body + RTMSG.size, end):
            if attr == RTA_TABLE and len(value) == 4:
                table = struct.unpack("=I", value)[0]
        if dst_len == 0 and table == MAIN_TABLE:
            return True
    return False


def link_state(interface: str) -> int | None:
    """The interface's index while it is up; None when it is down or missing."""
    try:
        index = socket.if_nametoindex(interface)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = IFREQ.pack(interface.encode(), 0)
            _, flags = IFREQ.unpack(fcntl.ioctl(sock, SIOCGIFFLAGS, request))
    except OSError:
        return None
    return index if flags & IFF_UP else None


def interface_networks(interfaces: Iterable[str]) -> list[IPNetwork]:
    """The networks behind each interface: its addresses' subnets and the routes out of
    it (a WireGuard interface often has a /32 and a route per peer's AllowedIPs). Left
    out: default routes, and link-local networks (every link has fe80::/64: it would let
    in the neighbours of every interface). A missing interface has none.
    """
    found: dict[IPNetwork, None] = {}
    wire = RouteWire()  # main may hold a country's routes: only the interface's are read
    with contextlib.closing(wire), IPRoute() as ip:
        for name in interfaces:
            indexes = ip.link_lookup(ifname=name)
            if not indexes:
                continue
            for message in ip.get_addr(index=indexes[0]):
                address = message.get_attr("IFA_ADDRESS")
                network = ipaddress.ip_interface(f"{address}/{message['prefixlen']}").network
                if not network.is_link_local:
                    found[network] = None
            for version in (4, 6):
                for route in wire.dump(version, MAIN_TABLE, oif=indexes[0]):
                    if route.network.prefixlen:
                        found[route.network] = None
    return list(found)


class LinkWatcher:
    """Calls ``on_change(interface, index)`` for every link event (index None: the
    interface is down or gone), ``on_main_default()`` when a default route of ``main``
    comes or goes, and ``on_overrun()`` when the kernel dropped link events because they
    came faster than they were read: then nothing is known for sure. Route events come
    on a socket of their own: a table of a country's routes written (and zebra's copies
    in main) is a flood that must not cost the link events; when route events are lost,
    ``on_main_default()`` is called (main's default routes are copied again).

    Subscribed from construction (events queue up in the socket), read from ``start``:
    an interface that appears while the kernel is first programmed is not missed.
    ``sock`` and ``route_sock``: rtnetlink sockets made elsewhere (in another namespace);
    default, ones in this thread's namespace.
    """

    def __init__(
        self,
        on_change: Callable[[str, int | None], None],
        on_overrun: Callable[[], None],
        sock: socket.socket | None = None,
        on_main_default: Callable[[], None] | None = None,
        route_sock: socket.socket | None = None,
    ) -> None:
        self._on_change = on_change
        self._on_overrun = on_overrun
        self._on_main_default = on_main_default
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock = sock
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self._sock.bind((0, RTMGRP_LINK))
        self._sock.setblocking(False)
        self._routes: socket.socket | None = None
        if on_main_default is not None:
            routes = route_sock or socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE
            )
            routes.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            routes.bind((0, RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))
            routes.setblocking(False)
            self._routes = routes
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock, self._readable)
        if self._routes is not None:
            self._loop.add_reader(self._routes, self._routes_readable)

    def _readable(self) -> None:
        for data in self._datagrams(self._sock, self._on_overrun):
            for interface, index in link_events(data):
                self._on_change(interface, index)

    def _routes_readable(self) -> None:
        assert self._routes is not None and self._on_main_default is not None
        for data in self._datagrams(self._routes, self._on_main_default):
            if main_default_changed(data):
                self._on_main_default()

    def _datagrams(self, sock: socket.socket, on_overrun: Callable[[], None]) -> Iterator[bytes]:
        """What ``sock`` holds now; ``on_overrun`` for each time the kernel dropped some."""
        while self._loop is not None:
            try:
                yield sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    log.error(
                        "interface events: netlink read failed (%s): exit routes are no "
                        "longer put back by themselves when a tunnel comes back; reload then",
                        e,
                    )
                    self.close()
                    return
                on_overrun()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._sock)
            if self._routes is not None:
                self._loop.remove_reader(self._routes)
            self._loop = None
        self._sock.close()
        if self._routes is not None:
            self._routes.close()
