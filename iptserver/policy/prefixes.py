"""Longest-prefix lookups in one binary search.

CIDR blocks are either nested or disjoint, so a set of them cuts the address space into
segments where the set of covering blocks is fixed. We precompute, per segment, the best
value among its covering blocks; a lookup is then one ``bisect`` instead of one probe per
prefix length. The kernel's ``hash:net`` sets give the same answer (longest prefix).
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from iptserver.schema.values import IPAddress, IPNetwork

V = TypeVar("V")


class PrefixMap(Generic[V]):
    """Maps an address to the best value among the networks that contain it."""

    def __init__(
        self, entries: Iterable[tuple[IPNetwork, V]], better: Callable[[V, V], bool]
    ) -> None:
        """``better(a, b)`` says whether ``a`` beats ``b`` when both cover an address."""
        # Keyed by address class, which is cheaper to get than ``ip.version``.
        self._families: dict[type, tuple[list[int], list[int], list[V]]] = {}
        by_family: dict[int, dict[tuple[int, int], V]] = {4: {}, 6: {}}
        for net, value in entries:
            start = int(net.network_address)
            # The last address, without ipaddress's broadcast_address (3 objects a net).
            span = (start, start | ((1 << (net.max_prefixlen - net.prefixlen)) - 1))
            blocks = by_family[net.version]
            if span not in blocks or better(value, blocks[span]):
                blocks[span] = value
        classes = {4: ipaddress.IPv4Address, 6: ipaddress.IPv6Address}
        for version, blocks in by_family.items():
            if blocks:
                self._families[classes[version]] = _flatten(blocks, better)

    def __bool__(self) -> bool:
        return bool(self._families)

    def lookup(self, ip: IPAddress) -> V | None:
        family = self._families.get(type(ip))
        if family is None:
            return None
        starts, ends, values = family
        x = int(ip)
        i = bisect_right(starts, x) - 1
        if i >= 0 and x <= ends[i]:
            return values[i]
        return None


def _flatten(
    blocks: dict[tuple[int, int], V], better: Callable[[V, V], bool]
) -> tuple[list[int], list[int], list[V]]:
    starts: list[int] = []
    ends: list[int] = []
    values: list[V] = []

    def emit(start: int, end: int, value: V) -> None:
        if start > end:
            return
        if ends and ends[-1] + 1 == start and values[-1] is value:
            ends[-1] = end
            return
        starts.append(start)
        ends.append(end)
        values.append(value)

    stack: list[tuple[int, V]] = []  # (end, best value of this block and its parents)
    cursor = 0
    # Parents sort before their children: same start, larger block first.
    for (start, end), value in sorted(blocks.items(), key=lambda item: (item[0][0], -item[0][1])):
        while stack and stack[-1][0] < start:
            top_end, top_value = stack.pop()
            emit(cursor, top_end, top_value)
            cursor = top_end + 1
        if stack:
            emit(cursor, start - 1, stack[-1][1])
            parent = stack[-1][1]
            value = value if better(value, parent) else parent
        cursor = start
        stack.append((end, value))
    while stack:
        top_end, top_value = stack.pop()
        emit(cursor, top_end, top_value)
        cursor = top_end + 1
    return starts, ends, values
