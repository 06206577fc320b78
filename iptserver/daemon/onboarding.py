"""Clients added and removed while the daemon runs: the roster in the state directory,
the peer on the running WireGuard interface, and the config (and QR code) handed back.

An add is all or nothing: the key file, the peer and the roster entry go in together,
or what went in first is taken out again before the error is said.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iptserver.dataplane.wireguard import interface_key, peers, remove_peer, set_peer
from iptserver.errors import DataplaneError, IptserverError
from iptserver.mesh.keys import KeyStore, public_of
from iptserver.mesh.roster import (
    Enrolled,
    RosterError,
    check_request,
    clashes,
    free_address,
    from_json,
    to_json,
)
from iptserver.mesh.topology import ClientPeer, Clients
from iptserver.render.clients import config_text, qr_png
from iptserver.schema.values import IPAddress, IPNetwork

log = logging.getLogger(__name__)

ROSTER = "clients.json"


@dataclass(frozen=True)
class Added:
    client: Enrolled
    config: str  # wg-quick text; without the private key when the client keeps its own
    qr_png: bytes | None  # the config as a QR code, when it carries the private key


class Onboarding:
    """The clients of ``clients.interface`` that the API adds, kept in STATE/clients.json."""

    def __init__(self, clients: Clients, state_dir: Path) -> None:
        self._clients = clients
        self._path = state_dir / ROSTER
        self._keys = KeyStore(state_dir)
        self._lock = asyncio.Lock()
        self._enrolled = self._read()
        for problem in clashes(clients, self._enrolled):
            log.error("%s: %s", self._path, problem)

    @property
    def interface(self) -> str:
        return self._clients.interface

    def follow(self, clients: Clients) -> None:
        """A reload: the schema's clients section as it is now."""
        self._clients = clients
        for problem in clashes(clients, self._enrolled):
            log.error("%s: %s", self._path, problem)

    async def add(self, name: str, public_key: str | None) -> Added:
        async with self._lock:
            check_request(self._clients, self._enrolled, name, public_key)
            address = free_address(self._clients, self._enrolled)
            private = None
            if public_key is None:
                private = self._keys.client_private(name)  # made now: STATE/keys/clients
                public_key = public_of(private)
            client = Enrolled(name, address, public_key, keyed_here=private is not None)
            try:
                await asyncio.to_thread(set_peer, self.interface, public_key, [_host(address)])
                try:
                    self._write([*self._enrolled, client])
                except OSError as e:
                    await asyncio.to_thread(remove_peer, self.interface, public_key)
                    raise IptserverError(f"cannot write {self._path}: {e}") from e
            except BaseException:
                if private is not None:
                    self._key_file(name).unlink(missing_ok=True)
                raise
            self._enrolled.append(client)
        log.info("client %s added: %s on %s", name, address, self.interface)
        peer = ClientPeer(name, address, None, public_key)
        server = await asyncio.to_thread(interface_key, self.interface)
        config = config_text(self._clients, peer, private, server)
        return Added(client, config, qr_png(config) if private is not None else None)

    async def remove(self, name: str) -> Enrolled:
        async with self._lock:
            found = next((e for e in self._enrolled if e.name == name), None)
            if found is None:
                if name in {peer.name for peer in self._clients.peers}:
                    raise RosterError(409, f"client {name!r} is the schema's: remove it there")
                raise RosterError(404, f"no client {name!r}")
            try:
                await asyncio.to_thread(remove_peer, self.interface, found.public_key)
            except DataplaneError:
                if _exists(self.interface):
                    raise
                # No interface, no peer on it: the roster is what would bring it back.
            kept = [e for e in self._enrolled if e is not found]
            try:
                self._write(kept)
            except OSError as e:
                raise IptserverError(
                    f"client {name!r} is off {self.interface}, but {self._path} still "
                    f"lists it (a restart would add it again): {e}"
                ) from e
            self._enrolled = kept
            if found.keyed_here:
                self._key_file(name).unlink(missing_ok=True)
        log.info("client %s removed from %s", name, self.interface)
        return found

    async def listing(self) -> list[dict[str, Any]]:
        """The schema's clients, then those added, each with what the interface knows."""
        try:
            status = await asyncio.to_thread(peers, self.interface)
        except DataplaneError as e:
            log.warning("%s", e)
            status = {}
        rows: list[tuple[str, str, str | None, str]] = [
            (p.name, str(p.address), p.public_key, "schema") for p in self._clients.peers
        ]
        rows += [(e.name, str(e.address), e.public_key, "api") for e in self._enrolled]
        listed = []
        for name, address, key, source in rows:
            seen = status.get(key) if key is not None else None
            listed.append(
                {
                    "name": name,
                    "address": address,
                    "public_key": key,
                    "source": source,
                    "endpoint": seen.endpoint if seen else None,
                    "latest_handshake": seen.latest_handshake if seen else None,
                    "rx_bytes": seen.rx_bytes if seen else 0,
                    "tx_bytes": seen.tx_bytes if seen else 0,
                }
            )
        return listed

    async def restore(self) -> None:
        """Put every added client on the interface again (at start, and when the
        interface was made anew); an interface that is not there yet is said once."""
        async with self._lock:
            for client in self._enrolled:
                try:
                    await asyncio.to_thread(
                        set_peer, self.interface, client.public_key, [_host(client.address)]
                    )
                except DataplaneError as e:
                    log.warning("clients added by the API are not on %s yet: %s", self.interface, e)
                    return
        if self._enrolled:
            log.info("%d clients added by the API put on %s", len(self._enrolled), self.interface)

    def _key_file(self, name: str) -> Path:
        return self._keys.root / "clients" / f"{name}.key"

    def _read(self) -> list[Enrolled]:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as e:
            raise IptserverError(f"cannot read {self._path}: {e}") from e
        try:
            return from_json(text)
        except ValueError as e:
            raise IptserverError(f"{self._path} is not a clients file: {e}") from e

    def _write(self, enrolled: list[Enrolled]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        partial = self._path.with_name(self._path.name + ".partial")
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(to_json(enrolled))
        partial.replace(self._path)


def _exists(interface: str) -> bool:
    try:
        socket.if_nametoindex(interface)
    except OSError:
        return False
    return True


def _host(address: IPAddress) -> IPNetwork:
    return ipaddress.ip_network(address)
