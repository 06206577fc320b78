"""ipsets over netlink.

Sets are created, swapped and destroyed with pyroute2; entries are added, deleted and
listed with messages of our own (``ipset_netlink``), a batch at a time.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Sequence

from pyroute2 import IPSet
from pyroute2.netlink.nfnetlink.ipset import IPSET_FLAG_LIST_HEADER, IPSET_FLAG_LIST_SETNAME

from iptserver.dataplane.ipset_netlink import BATCH, Entry, RawEntry, SetWire, network_of
from iptserver.dataplane.netlink import kernel_errors
from iptserver.errors import DataplaneError
from iptserver.schema.values import IPNetwork

__all__ = ["BATCH", "MAX_ELEMENTS", "Entry", "IPSets", "RawEntry", "entries_of"]

MAX_ELEMENTS = 1 << 20


class IPSets:
    """The ipsets of one network namespace (the one the process runs in)."""

    def __init__(self) -> None:
        with kernel_errors("cannot open the ipset netlink socket"):
            self._ipset = IPSet()
        self._wire = SetWire()

    def close(self) -> None:
        self._ipset.close()
        self._wire.close()

    def exists(self, name: str) -> bool:
        with kernel_errors(f"cannot read ipset {name}", fine={errno.ENOENT}):
            list(self._ipset.headers(name))
            return True
        return False  # ENOENT: no set of that name

    def names(self) -> list[str]:
        with kernel_errors("cannot list ipsets"):
            messages = self._ipset.list(flags=IPSET_FLAG_LIST_SETNAME)
            return list(dict.fromkeys(m.get_attr("IPSET_ATTR_SETNAME") for m in messages))

    def size(self, name: str) -> int:
        """How many entries the set holds (read from its header: no entry is listed)."""
        with kernel_errors(f"cannot read ipset {name}"):
            for message in self._ipset.list(name=name, flags=IPSET_FLAG_LIST_HEADER):
                data = message.get_attr("IPSET_ATTR_DATA")
                if data is not None and data.get_attr("IPSET_ATTR_ELEMENTS") is not None:
                    return int(data.get_attr("IPSET_ATTR_ELEMENTS"))
        raise DataplaneError(f"cannot read ipset {name}: the kernel gave no entry count")

    def create(
        self,
        name: str,
        family: int,
        *,
        timeout: bool,
        skbinfo: bool,
        maxelem: int = MAX_ELEMENTS,
    ) -> None:
        """Create a ``hash:net`` set, or keep the one of that name (and its entries)."""
        if self.exists(name):
            return
        with kernel_errors(f"cannot create ipset {name}"):
            self._ipset.create(
                name,
                stype="hash:net",
                family=socket.AF_INET if family == 4 else socket.AF_INET6,
                timeout=0 if timeout else None,
                skbinfo=skbinfo,
                maxelem=maxelem,
            )

    def destroy(self, name: str) -> None:
        """Destroy the set; one that is already gone is fine."""
        with kernel_errors(f"cannot destroy ipset {name}", fine={errno.ENOENT}):
            self._ipset.destroy(name)

    def swap(self, a: str, b: str) -> None:
        with kernel_errors(f"cannot swap ipsets {a} and {b}"):
            self._ipset.swap(a, b)

    def flush(self, name: str) -> None:
        with kernel_errors(f"cannot flush ipset {name}"):
            self._ipset.flush(name)

    def add(self, name: str, entries: Sequence[Entry], mark_mask: int = 0xFFFFFFFF) -> None:
        """Add (or refresh: new timeout and mark) entries, ``BATCH`` per netlink message."""
        self._wire.add(name, entries, mark_mask)

    def delete(self, name: str, entries: Sequence[Entry]) -> None:
        self._wire.delete(name, entries)

    def entries(self, name: str) -> list[Entry]:
        """The set's entries as the kernel holds them (for adoption and status)."""
        return [
            Entry(network_of(address, cidr), mark, timeout)
            for address, cidr, mark, timeout in self._wire.scan(name)
        ]


def entries_of(networks: Iterable[tuple[IPNetwork, int]], timeout: int | None) -> list[Entry]:
    return [Entry(net, mark, timeout) for net, mark in networks]
