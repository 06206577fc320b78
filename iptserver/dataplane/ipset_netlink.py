"""The ipset netlink messages iptserver sends itself: entries added, deleted and listed.

One netlink message carries up to ``BATCH`` entries (``IPSET_ATTR_ADT``, as the ``ipset
restore`` tool does), encoded with ``struct``: pyroute2's generic attribute encoder costs
about 150 µs per entry (minutes for a whole country), its decoder about 100 µs (100 s for
a full learned set; this reader about 3 µs). Nothing here imports pyroute2, so the child
that lists the learned sets for the daemon starts in a tenth of a second.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from iptserver.errors import DataplaneError, SetFullError

if TYPE_CHECKING:
    from iptserver.schema.values import IPNetwork

BATCH = 1000

NETLINK_NETFILTER = 12
NFNL_SUBSYS_IPSET = 6
IPSET_CMD_LIST = 7
IPSET_CMD_ADD = 9
IPSET_CMD_DEL = 10
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
NLA_TYPE_MASK = 0x3FFF
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
ATTR_PROTOCOL, ATTR_SETNAME, ATTR_DATA, ATTR_ADT, ATTR_LINENO = 1, 2, 7, 8, 9
ATTR_IP, ATTR_CIDR, ATTR_TIMEOUT, ATTR_SKBMARK = 1, 3, 6, 27
ATTR_IPADDR_IPV4, ATTR_IPADDR_IPV6 = 1, 2
IPSET_PROTOCOL = 7
IPSET_ERR_HASH_FULL = 4352  # IPSET_ERR_TYPE_SPECIFIC: a hash set at its maxelem
IPSET_ERRORS = {
    4097: "protocol error",
    4103: "element exists",
    4106: "wrong family for this set",
    4107: "timeout given to a set created without timeouts",
    4114: "skbmark given to a set created without skbinfo",
}


# An entry as listed: packed address, prefix length, mark or None, timeout or None.
RawEntry = tuple[bytes, int, int | None, int | None]


@dataclass(frozen=True, slots=True)
class Entry:
    network: IPNetwork
    mark: int | None = None  # skbmark carried by the entry
    timeout: int | None = None  # seconds; 0 = never expires (in a set with timeouts)


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _encode_entry(entry: Entry, mark_mask: int) -> bytes:
    net = entry.network
    address = _attr(
        (ATTR_IPADDR_IPV4 if net.version == 4 else ATTR_IPADDR_IPV6) | NLA_F_NET_BYTEORDER,
        net.network_address.packed,
    )
    parts = [_attr(ATTR_IP | NLA_F_NESTED, address), _attr(ATTR_CIDR, bytes([net.prefixlen]))]
    if entry.timeout is not None:
        parts.append(_attr(ATTR_TIMEOUT | NLA_F_NET_BYTEORDER, struct.pack(">I", entry.timeout)))
    if entry.mark is not None:
        parts.append(
            _attr(ATTR_SKBMARK | NLA_F_NET_BYTEORDER, struct.pack(">II", entry.mark, mark_mask))
        )
    return _attr(ATTR_DATA | NLA_F_NESTED, b"".join(parts))


class SetWire:
    """A raw netfilter netlink socket speaking ipset's entry messages."""

    def __init__(self) -> None:
        try:
            self._raw = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            self._raw.bind((0, 0))
        except OSError as e:
            raise DataplaneError(f"cannot open the ipset netlink socket: {e}") from e
        self._seq = 0

    def close(self) -> None:
        self._raw.close()

    def scan(self, name: str) -> Iterator[RawEntry]:
        """The set's entries as they come from the kernel, one dump message at a time:
        (packed address, prefix length, mark or None, timeout or None)."""
        self._seq += 1
        seq = self._seq
        attrs = _attr(ATTR_PROTOCOL, bytes([IPSET_PROTOCOL])) + _attr(
            ATTR_SETNAME, name.encode() + b"\0"
        )
        payload = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0) + attrs
        header = struct.pack(
            "=IHHII",
            16 + len(payload),
            (NFNL_SUBSYS_IPSET << 8) | IPSET_CMD_LIST,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            0,
        )
        try:
            self._raw.send(header + payload)
        except OSError as e:
            raise DataplaneError(f"cannot list ipset {name}: {e}") from e
        while True:
            try:
                data = self._raw.recv(1 << 20)
            except OSError as e:
                raise DataplaneError(f"cannot list ipset {name}: {e}") from e
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _, message_seq = struct.unpack_from("=IHHI", data, offset)
                if length < 16:
                    raise DataplaneError(f"cannot list ipset {name}: malformed netlink reply")
                if message_seq == seq:
                    if kind == NLMSG_DONE:
                        return
                    if kind == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, offset + 16)
                        if code:
                            raise DataplaneError(f"cannot list ipset {name}: {os.strerror(-code)}")
                    else:
                        yield from _adt_entries(data, offset + 20, offset + length)
                offset += (length + 3) & ~3

    def add(self, name: str, entries: Sequence[Entry], mark_mask: int = 0xFFFFFFFF) -> None:
        """Add (or refresh: new timeout and mark) entries, ``BATCH`` per netlink message."""
        self._adt(IPSET_CMD_ADD, name, entries, mark_mask)

    def delete(self, name: str, entries: Sequence[Entry]) -> None:
        self._adt(IPSET_CMD_DEL, name, [Entry(e.network) for e in entries], 0)

    def _adt(self, command: int, name: str, entries: Sequence[Entry], mark_mask: int) -> None:
        for start in range(0, len(entries), BATCH):
            batch = entries[start : start + BATCH]
            family = socket.AF_INET if batch[0].network.version == 4 else socket.AF_INET6
            body = b"".join(_encode_entry(entry, mark_mask) for entry in batch)
            self._request(command, family, name, body)

    def _request(self, command: int, family: int, name: str, adt: bytes) -> None:
        self._seq += 1
        attrs = (
            _attr(ATTR_PROTOCOL, bytes([IPSET_PROTOCOL]))
            + _attr(ATTR_SETNAME, name.encode() + b"\0")
            + _attr(ATTR_LINENO, struct.pack("=I", 0))
            + _attr(ATTR_ADT | NLA_F_NESTED, adt)
        )
        payload = struct.pack("=BBH", family, 0, 0) + attrs
        header = struct.pack(
            "=IHHII",
            16 + len(payload),
            (NFNL_SUBSYS_IPSET << 8) | command,
            NLM_F_REQUEST | NLM_F_ACK,
            self._seq,
            0,
        )
        try:
            self._raw.send(header + payload)
            while True:  # skip a late reply to an earlier request
                reply = self._raw.recv(65536)
                if struct.unpack_from("=I", reply, 8)[0] == self._seq:
                    break
        except OSError as e:
            raise DataplaneError(f"ipset {name}: netlink send failed: {e}") from e
        self._check_ack(name, reply)

    def _check_ack(self, name: str, reply: bytes) -> None:
        kind = struct.unpack_from("=H", reply, 4)[0]
        if kind != NLMSG_ERROR:
            raise DataplaneError(f"ipset {name}: unexpected netlink reply type {kind}")
        (code,) = struct.unpack_from("=i", reply, 16)
        if -code == IPSET_ERR_HASH_FULL:
            raise SetFullError(
                f"ipset {name} is full: it holds as many entries as it was made for "
                "(kernel.max_learned); new answers are not routed until entries expire. "
                "Raise kernel.max_learned (the set is remade when no daemon keeps it) or "
                "shorten ttl.hold"
            )
        if code:
            what = IPSET_ERRORS.get(-code) or os.strerror(-code)
            raise DataplaneError(f"ipset {name}: the kernel refused the entries: {what}")


def _attrs(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type without flags, payload start, payload end) of each attribute in a range."""
    while start + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, start)
        if length < 4:
            return
        yield kind & NLA_TYPE_MASK, start + 4, start + length
        start += (length + 3) & ~3


def _adt_entries(data: bytes, start: int, end: int) -> Iterator[RawEntry]:
    """The entries in one list message's attributes (after its nfgenmsg)."""
    for kind, adt_start, adt_end in _attrs(data, start, end):
        if kind != ATTR_ADT:
            continue
        for _, entry_start, entry_end in _attrs(data, adt_start, adt_end):
            address = b""
            cidr = 0
            mark = timeout = None
            for field, begin, finish in _attrs(data, entry_start, entry_end):
                if field == ATTR_IP:
                    address = data[begin + 4 : finish]
                elif field == ATTR_CIDR:
                    cidr = data[begin]
                elif field == ATTR_TIMEOUT:
                    (timeout,) = struct.unpack_from(">I", data, begin)
                elif field == ATTR_SKBMARK:
                    (mark,) = struct.unpack_from(">I", data, begin)
            yield address, cidr or len(address) * 8, mark, timeout


def network_of(address: bytes, cidr: int) -> IPNetwork:
    """The network of a listed entry."""
    if len(address) == 4:
        return ipaddress.IPv4Network((int.from_bytes(address, "big"), cidr))
    return ipaddress.IPv6Network((int.from_bytes(address, "big"), cidr))
