"""Clients added while the daemon runs (``POST /v1/clients``): who they are, the address
each gets, and the file that keeps them. Pure: the caller reads and writes the file.

The schema's own peers take the clients' subnet from its start (``topology``); clients
added here take it from its end, so a peer written into the schema later does not land
on an address given out already (unless the subnet is nearly full: ``clashes`` says).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from iptserver.mesh.topology import Clients
from iptserver.schema.values import IPAddress

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


class RosterError(Exception):
    """A request the roster refuses: ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Enrolled:
    name: str
    address: IPAddress
    public_key: str
    keyed_here: bool  # the daemon made its private key (STATE/keys/clients/NAME.key)


def check_request(
    clients: Clients, enrolled: Sequence[Enrolled], name: str, public_key: str | None
) -> None:
    """Raise RosterError unless ``name`` (and ``public_key``) may be added."""
    if clients.endpoint is None:
        raise RosterError(
            409,
            f"clients cannot reach node {clients.node!r}: it has no endpoint "
            f"(set nodes.{clients.node}.endpoint)",
        )
    if not NAME.match(name):
        raise RosterError(
            400,
            f"client name {name!r}: 1-64 letters, digits, '_', '.' or '-', not starting "
            "with '.' or '-'",
        )
    if name in {peer.name for peer in clients.peers}:
        raise RosterError(409, f"client {name!r} is in the schema (clients.peers)")
    if name in {e.name for e in enrolled}:
        raise RosterError(409, f"client {name!r} exists already")
    if public_key is not None:
        check_key(public_key)
        taken = {e.public_key: e.name for e in enrolled}
        taken |= {p.public_key: p.name for p in clients.peers if p.public_key is not None}
        if public_key in taken:
            raise RosterError(409, f"that public key is client {taken[public_key]!r}'s")


def check_key(text: str) -> None:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise RosterError(400, "public_key is not a WireGuard key (44 characters of base64)")


def free_address(clients: Clients, enrolled: Iterable[Enrolled]) -> IPAddress:
    """The highest host address of the clients' subnet no one has."""
    taken = {clients.address.ip, *(p.address for p in clients.peers)}
    taken |= {e.address for e in enrolled}
    subnet = clients.subnet
    last = int(subnet.broadcast_address) - (1 if subnet.version == 4 else 0)
    first = int(subnet.network_address) + (1 if subnet.version == 4 else 0)
    for number in range(last, first - 1, -1):
        address = ipaddress.ip_address(number)
        if address not in taken:
            return address
        if last - number > 65536:  # a huge IPv6 subnet: this many taken is not a full one
            break
    raise RosterError(409, f"the clients' subnet {subnet} is full")


def clashes(clients: Clients, enrolled: Iterable[Enrolled]) -> list[str]:
    """Added clients whose name or address a schema peer has now (the schema changed)."""
    names = {p.name for p in clients.peers}
    addresses = {p.address: p.name for p in clients.peers}
    found = []
    for e in enrolled:
        if e.name in names:
            found.append(f"client {e.name!r} was added by the API and is now in the schema too")
        elif e.address in addresses:
            found.append(
                f"client {e.name!r} has {e.address}, which the schema now gives "
                f"{addresses[e.address]!r}"
            )
        elif e.address not in clients.subnet:
            found.append(f"client {e.name!r} has {e.address}, outside {clients.subnet} now")
    return found


def to_json(enrolled: Sequence[Enrolled]) -> str:
    return json.dumps(
        [
            {
                "name": e.name,
                "address": str(e.address),
                "public_key": e.public_key,
                "keyed_here": e.keyed_here,
            }
            for e in enrolled
        ],
        indent=2,
    )


def from_json(text: str) -> list[Enrolled]:
    """Raises ValueError (with what is wrong) for a file that is not one of ours."""
    items = json.loads(text)
    if not isinstance(items, list):
        raise ValueError("not a list of clients")
    found = []
    for index, item in enumerate(items):
        try:
            entry = Enrolled(
                name=str(item["name"]),
                address=ipaddress.ip_address(item["address"]),
                public_key=str(item["public_key"]),
                keyed_here=bool(item["keyed_here"]),
            )
            check_key(entry.public_key)
        except (KeyError, TypeError, ValueError, RosterError) as e:
            raise ValueError(f"client {index + 1}: {e}") from e
        found.append(entry)
    return found
