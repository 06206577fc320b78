"""Two or more entries in one schema: what each entry's iptserver sees of it.

The policy (``exits``, ``rules``, ``default``, ``ingress``, ``dns``) is written once. Its
interface names are those of one entry's machine; each entry is its own machine, so the
same names may serve every entry (give each entry's tunnel ends the same ``interface``).
Where an entry's names differ, the name written resolves on it through the mesh: an
interface that is some entry's end of a tunnel to node P is, on entry E, E's end of its
tunnel to P. Other names (a LAN, the clients' interface) are taken as they are. Likewise a
``dns.listen`` address that is some entry's address on a tunnel to P is, on E, E's
address on its tunnel to P.

``for_entry`` gives the schema as one entry's daemon runs it: names and addresses
resolved, that entry the only one with ``entry: true`` and the clients' node. Pure.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from iptserver.schema.mesh import Problems, entries_of
from iptserver.schema.model import Schema
from iptserver.schema.values import Endpoint, IPAddress, IPNetwork


@dataclass(frozen=True)
class End:
    """A node's end of a tunnel."""

    tunnel: str
    node: str
    interface: str
    peer: str
    addresses: tuple[IPAddress, ...]


def _host_addresses(net: IPNetwork) -> tuple[IPAddress, IPAddress]:
    """The tunnel's two addresses, as ``mesh.topology`` gives them (a /31: both)."""
    first = int(net.network_address) + (0 if net.prefixlen >= net.max_prefixlen - 1 else 1)
    return ipaddress.ip_address(first), ipaddress.ip_address(first + 1)


def tunnel_ends(schema: Schema) -> list[End]:
    """Every end of every tunnel of two hosts."""
    ends = []
    for name, tunnel in schema.tunnels.items():
        if len(tunnel.hosts) != 2:
            continue
        nets = [tunnel.subnet] + ([tunnel.subnet6] if tunnel.subnet6 is not None else [])
        pairs = [_host_addresses(net) for net in nets]
        for position, (node, side) in enumerate(tunnel.hosts.items()):
            (peer,) = set(tunnel.hosts) - {node}
            addresses = tuple(pair[position] for pair in pairs)
            ends.append(End(name, node, side.interface or name, peer, addresses))
    return ends


class Resolver:
    """Interface names and addresses written for one entry, as another entry has them."""

    def __init__(self, schema: Schema) -> None:
        self.entries = entries_of(schema.nodes)
        entries = set(self.entries)
        self._ends = [end for end in tunnel_ends(schema) if end.node in entries]

    def _own(self, entry: str) -> list[End]:
        return [end for end in self._ends if end.node == entry]

    def _written(self, interface: str) -> End | None:
        """The entry tunnel end a name stands for (None: not a tunnel end of an entry)."""
        return next((end for end in self._ends if end.interface == interface), None)

    def peer_end(self, written: End, entry: str) -> End | str:
        """``entry``'s end toward ``written``'s peer, or why there is none."""
        found = [end for end in self._own(entry) if end.peer == written.peer]
        if len(found) == 1:
            return found[0]
        many = "several tunnels" if found else "no tunnel"
        return (
            f"entry {entry!r} has {many} to node {written.peer!r} (the node behind "
            f"{written.interface} on entry {written.node!r})"
        )

    def interface(self, interface: str, entry: str) -> str:
        """The name on ``entry`` (unchanged when it needs no resolving or cannot be)."""
        resolved = self.try_interface(interface, entry)
        return resolved if isinstance(resolved, str) else interface

    def try_interface(self, interface: str, entry: str) -> str | tuple[str]:
        """The name on ``entry``, or (why not,)."""
        if any(end.interface == interface for end in self._own(entry)):
            return interface
        written = self._written(interface)
        if written is None:
            return interface
        found = self.peer_end(written, entry)
        return found.interface if isinstance(found, End) else (found,)

    def address(self, address: IPAddress, entry: str) -> IPAddress:
        """An entry's tunnel address as ``entry`` has it (others unchanged)."""
        for end in self._ends:
            if address in end.addresses and end.node != entry:
                found = self.peer_end(end, entry)
                if isinstance(found, End):
                    for mine in found.addresses:
                        if mine.version == address.version:
                            return mine
        return address


def entry_interface_problems(schema: Schema) -> Problems:
    """With several entries, every exit's and ingress interface must resolve on each."""
    resolver = Resolver(schema)
    if len(resolver.entries) < 2:
        return []
    named: list[tuple[tuple[str | int, ...], str]] = [
        (("exits", name, "interface"), spec.interface) for name, spec in schema.exits.items()
    ]
    named += [(("ingress", i), interface) for i, interface in enumerate(schema.ingress)]
    problems: Problems = []
    for path, interface in named:
        for entry in resolver.entries:
            resolved = resolver.try_interface(interface, entry)
            if isinstance(resolved, tuple):
                problems.append((path, f"{interface} on entry {entry!r}: {resolved[0]}"))
    return problems


def ingress_everywhere(schema: Schema) -> list[str]:
    """``ingress`` as written and as each entry has it."""
    resolver = Resolver(schema)
    names = list(schema.ingress)
    for entry in resolver.entries:
        names += (resolver.interface(interface, entry) for interface in schema.ingress)
    return list(dict.fromkeys(names))


class NotAnEntry(ValueError):
    """``for_entry`` was given a node that is no entry of the schema."""


def for_entry(schema: Schema, node: str) -> Schema:
    """The schema as entry ``node``'s daemon runs it (see the module's docstring)."""
    resolver = Resolver(schema)
    if node not in resolver.entries:
        entries = ", ".join(resolver.entries) or "none"
        raise NotAnEntry(f"node {node!r} is no entry of the schema (entries: {entries})")
    exits = {
        name: spec.model_copy(update={"interface": resolver.interface(spec.interface, node)})
        for name, spec in schema.exits.items()
    }
    ingress = list(dict.fromkeys(resolver.interface(i, node) for i in schema.ingress))
    listen = [Endpoint(resolver.address(e.address, node), e.port) for e in schema.dns.listen]
    nodes = {
        name: spec.model_copy(update={"entry": name == node}) if spec.entry else spec
        for name, spec in schema.nodes.items()
    }
    update: dict[str, object] = {
        "exits": exits,
        "ingress": ingress,
        "dns": schema.dns.model_copy(update={"listen": listen}),
        "nodes": nodes,
    }
    clients = schema.clients
    if clients is not None and node in clients.entries and clients.nodes:
        update["clients"] = clients.model_copy(update={"node": node, "nodes": []})
    return schema.model_copy(update=update)
