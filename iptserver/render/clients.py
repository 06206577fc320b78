"""wg-quick configs for mobile clients, and the same text as a QR code (PNG or terminal).

A phone's WireGuard app imports the QR code; it carries exactly the config text, private
key included. Pure functions: the same mesh and keys give the same bytes, PNG too.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import PurePosixPath

import segno

from iptserver.mesh.topology import ClientPeer, Clients, Mesh
from iptserver.render.files import Rendered, Secret
from iptserver.render.wireguard import KeySource, RenderError

PNG_SCALE = 6  # pixels per module: large enough for a phone camera at arm's length
BORDER = 4  # the quiet zone the QR standard asks for, in modules


@dataclass(frozen=True)
class ClientsRender:
    files: tuple[Rendered, ...]
    notes: tuple[str, ...]  # clients skipped, and why (for stderr)


def client_config(
    clients: Clients, peer: ClientPeer, keys: KeySource, *, per_entry: bool = False
) -> Rendered:
    """One client's config: its key and address, the clients' node as its only peer.
    ``per_entry`` (several entries): written as ``NODE/NAME.conf``, one per entry."""
    private = keys.client_private(peer.name, peer.private_key_file)
    where = peer.private_key_file or str(keys.root / "clients" / f"{peer.name}.key")
    text = config_text(clients, peer, private, keys.public(clients.node, clients.interface))
    path = PurePosixPath(clients.node, f"{peer.name}.conf") if per_entry else None
    return Rendered(path or PurePosixPath(f"{peer.name}.conf"), text, (Secret(private, where),))


def config_text(clients: Clients, peer: ClientPeer, private: str | None, server: str) -> str:
    """The wg-quick text of a client whose peer (the clients' node) has the public key
    ``server``; without ``private`` (the client keeps its own) a comment stands in."""
    if clients.endpoint is None:
        raise RenderError(
            f"clients cannot reach node {clients.node!r}: it has no endpoint "
            f"(set nodes.{clients.node}.endpoint)"
        )
    lines = [
        "[Interface]",
        f"PrivateKey = {private}" if private else "# PrivateKey = (the key this client made)",
        f"Address = {peer.address}/{peer.address.max_prefixlen}",
    ]
    if clients.dns:
        lines.append(f"DNS = {', '.join(str(ip) for ip in clients.dns)}")
    lines += [
        "",
        "[Peer]",
        f"PublicKey = {server}",
        f"Endpoint = {clients.endpoint}",
        f"AllowedIPs = {', '.join(str(net) for net in clients.allowed_ips)}",
    ]
    if clients.keepalive is not None:
        lines.append(f"PersistentKeepalive = {clients.keepalive}")
    return "\n".join(lines) + "\n"


def render_clients(mesh: Mesh, keys: KeySource, client: str | None = None) -> ClientsRender:
    """Every client's config (or one client's), in schema order; with several entries
    (``clients.nodes``) one per entry, ``NODE/NAME.conf``: the same key, address and DNS,
    that entry as the peer (a client switches entries by switching configs)."""
    clients = mesh.clients
    if clients is None or not clients.peers:
        raise RenderError("the schema has no clients (clients.peers) to render")
    peers = clients.peers
    if client is not None:
        peers = tuple(peer for peer in clients.peers if peer.name == client)
        if not peers:
            known = ", ".join(peer.name for peer in clients.peers)
            raise RenderError(f"no client {client!r} in the schema (clients: {known})")
    files: list[Rendered] = []
    notes: list[str] = []
    for peer in peers:
        if peer.public_key is not None and peer.private_key_file is None:
            why = (
                f"client {peer.name!r} keeps its own private key (the schema gives only its "
                "public_key): its config cannot be rendered here"
            )
            if client is not None:
                raise RenderError(why)
            notes.append(why)
            continue
        per_entry = len(mesh.all_clients) > 1
        files += (client_config(c, peer, keys, per_entry=per_entry) for c in mesh.all_clients)
    return ClientsRender(tuple(files), tuple(notes))


def qr_png(text: str) -> bytes:
    """The QR code of exactly ``text``, as PNG."""
    out = io.BytesIO()
    segno.make_qr(text, encoding="utf-8").save(out, kind="png", scale=PNG_SCALE, border=BORDER)
    return out.getvalue()


def qr_terminal(text: str) -> str:
    """The QR code of ``text`` in text blocks, two modules a line (light drawn on dark)."""
    out = io.StringIO()
    segno.make_qr(text, encoding="utf-8").terminal(out=out, compact=True, border=BORDER)
    return out.getvalue()
