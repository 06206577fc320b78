"""wg-quick configs for the mesh: one per node and tunnel end, plus the clients' interface.

Pure text builders over a :class:`~iptserver.mesh.topology.Mesh` and a key source; the
same mesh and keys give the same bytes (no timestamps, order as in the schema).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from iptserver.errors import IptserverError
from iptserver.mesh.keys import public_of
from iptserver.mesh.topology import ClientPeer, Clients, Link, Mesh, Node
from iptserver.render.files import Rendered, Secret
from iptserver.schema.values import IPNetwork

MASQUERADE_LABEL = 29
"""Conntrack label that tags connections which came in over a masquerading tunnel.

POSTROUTING cannot match the input interface, so the first packet of a connection from
the tunnel labels its conntrack entry (nat PREROUTING sees only first packets) and the
NAT rule masquerades labelled connections leaving by any other interface: no need to know
the uplink's name. A label, not a mark: the packet and connection marks that policy
routing (and iptserver's CONNMARK save/restore) read stay untouched."""


class KeySource(Protocol):
    """What renderers need from :class:`~iptserver.mesh.keys.KeyStore`."""

    root: Path

    def private(self, node: str, interface: str, file: str | None = None) -> str: ...

    def public(self, node: str, interface: str, file: str | None = None) -> str: ...

    def client_private(self, name: str, file: str | None = None) -> str: ...

    def preshared(self, tunnel: str) -> str: ...


class RenderError(IptserverError):
    """A render that cannot be done as asked (unknown node or client, nothing to render)."""


@dataclass(frozen=True)
class WireguardRender:
    files: tuple[Rendered, ...]
    notes: tuple[str, ...]  # sides skipped, and why (for stderr)


def private_key_location(keys: KeySource, node: str, interface: str, file: str | None) -> str:
    return file if file is not None else str(keys.root / node / f"{interface}.key")


def preshared_key_location(keys: KeySource, tunnel: str) -> str:
    return str(keys.root / "tunnels" / f"{tunnel}.psk")


def peer_public_key(link: Link, keys: KeySource) -> str:
    """The far side's public key: as given in the schema, else from its private key."""
    if link.peer_public_key is not None:
        return link.peer_public_key
    return keys.public(link.peer_node, link.peer_interface, link.peer_private_key_file)


SEND_ALL_TABLE = 30001  # the office's table with one route: default into the tunnel
SEND_ALL_PRIORITY = 30000  # and the rules that send its subnets' traffic there


def send_all_hooks(subnets: Sequence[IPNetwork]) -> list[str]:
    """PostUp/PostDown lines for ``send: all``: traffic from ``subnets`` takes main's
    routes more specific than a default (the LAN, the mesh's OSPF routes), and for the
    rest, where main would take the node's own uplink, the tunnel (%i)."""
    up, down = [], []
    for net in subnets:
        ip = "ip" if net.version == 4 else "ip -6"
        rules = [
            f"from {net} lookup main suppress_prefixlength 0 priority {SEND_ALL_PRIORITY}",
            f"from {net} lookup {SEND_ALL_TABLE} priority {SEND_ALL_PRIORITY + 1}",
        ]
        up += [f"PostUp = {ip} rule add {rule}" for rule in rules]
        down += [f"PostDown = {ip} rule del {rule}" for rule in rules]
    for ip in sorted({"ip" if net.version == 4 else "ip -6" for net in subnets}):
        up.append(f"PostUp = {ip} route replace default dev %i table {SEND_ALL_TABLE}")
        down.append(f"PostDown = {ip} route flush table {SEND_ALL_TABLE}")
    return up + down


def masquerade_hooks() -> list[str]:
    """PostUp/PostDown lines that NAT what arrives from the tunnel (%i) and leaves by
    another interface, for IPv4 and IPv6."""
    label = f"-m connlabel --label {MASQUERADE_LABEL}"
    rules = [
        f"-t nat {{op}} PREROUTING -i %i {label} --set",
        f"-t nat {{op}} POSTROUTING ! -o %i {label} -j MASQUERADE",
    ]
    tools = ("iptables", "ip6tables")
    up = [f"PostUp = {tool} -w {rule.format(op='-A')}" for tool in tools for rule in rules]
    down = [
        f"PostDown = {tool} -w {rule.format(op='-D')}" for tool in tools for rule in reversed(rules)
    ]
    return up + down


def tunnel_config(link: Link, keys: KeySource) -> Rendered:
    """The wg-quick config of one tunnel end (its private key must be held here)."""
    private = keys.private(link.node, link.interface, link.private_key_file)
    secrets = [
        Secret(
            private,
            private_key_location(keys, link.node, link.interface, link.private_key_file),
        )
    ]
    lines = [
        f"# {link.node}: tunnel {link.tunnel} to {link.peer_node} ({link.peer_interface}).",
        "# Rendered by `iptserver render wireguard`; edit the schema, not this file.",
        "[Interface]",
        f"Address = {', '.join(str(address) for address in link.addresses)}",
    ]
    if link.listen_port is not None:
        lines.append(f"ListenPort = {link.listen_port}")
    lines.append(f"PrivateKey = {private}")
    if link.table is not None:
        lines.append(f"Table = {link.table}")
    if link.masquerade:
        lines += masquerade_hooks()
    if link.send_all:
        lines += send_all_hooks(link.send_all)
    lines += ["", "[Peer]", f"# {link.peer_node}", f"PublicKey = {peer_public_key(link, keys)}"]
    if link.preshared:
        psk = keys.preshared(link.tunnel)
        secrets.append(Secret(psk, preshared_key_location(keys, link.tunnel)))
        lines.append(f"PresharedKey = {psk}")
    if link.peer_endpoint is not None:
        lines.append(f"Endpoint = {link.peer_endpoint}")
    lines.append(f"AllowedIPs = {', '.join(str(net) for net in link.allowed_nets)}")
    if link.keepalive is not None:
        lines.append(f"PersistentKeepalive = {link.keepalive}")
    path = PurePosixPath(link.node, f"{link.interface}.conf")
    return Rendered(path, "\n".join(lines) + "\n", tuple(secrets))


def client_public_key(peer: ClientPeer, keys: KeySource) -> str:
    """A client's public key: as given in the schema, else from its private key."""
    if peer.public_key is not None:
        return peer.public_key
    return public_of(keys.client_private(peer.name, peer.private_key_file))


def clients_config(node: Node, clients: Clients, keys: KeySource) -> Rendered:
    """The clients' interface on their node: one [Peer] per client, its /32 or /128."""
    private = keys.private(node.name, clients.interface)
    lines = [
        f"# {node.name}: mobile clients ({len(clients.peers)}).",
        "# Rendered by `iptserver render wireguard`; edit the schema, not this file.",
        "[Interface]",
        f"Address = {clients.address}",
        f"ListenPort = {clients.port}",
        f"PrivateKey = {private}",
    ]
    if node.ospf:
        lines.append("Table = off")
    for peer in clients.peers:
        host = peer.address.max_prefixlen
        lines += [
            "",
            "[Peer]",
            f"# {peer.name}",
            f"PublicKey = {client_public_key(peer, keys)}",
            f"AllowedIPs = {peer.address}/{host}",
        ]
    where = private_key_location(keys, node.name, clients.interface, None)
    path = PurePosixPath(node.name, f"{clients.interface}.conf")
    return Rendered(path, "\n".join(lines) + "\n", (Secret(private, where),))


def render_wireguard(mesh: Mesh, keys: KeySource, node: str | None = None) -> WireguardRender:
    """Every wg-quick config of the mesh (or of one node), in schema order."""
    if node is not None:
        try:
            chosen = [mesh.node(node)]
        except KeyError as e:
            raise RenderError(str(e.args[0])) from None
        if chosen[0].mikrotik:
            raise RenderError(
                f"node {node!r} is a RouterOS peer (mikrotik: true): "
                f"use `iptserver render routeros --node {node}`"
            )
    else:
        chosen = list(mesh.nodes.values())
    files: list[Rendered] = []
    notes: list[str] = []
    for each in chosen:
        if each.mikrotik:
            notes.append(
                f"{each.name}: a RouterOS peer, skipped (`iptserver render routeros "
                f"--node {each.name}` gives its script)"
            )
            continue
        for link in each.links:
            if link.public_key is not None:
                notes.append(
                    f"{each.name}/{link.interface}.conf: skipped, its private key is kept "
                    f"elsewhere (the schema gives only its public_key); {link.peer_node}'s "
                    "config uses that public key"
                )
                continue
            files.append(tunnel_config(link, keys))
        if (clients := mesh.clients_on(each.name)) is not None:
            files.append(clients_config(each, clients, keys))
    if not files and not notes:
        where = f"node {node!r}" if node is not None else "the schema"
        raise RenderError(f"{where} has no WireGuard tunnels or clients to render")
    return WireguardRender(tuple(files), tuple(notes))
