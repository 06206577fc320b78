"""FRR configs for the mesh: per node an ``frr.conf`` (zebra + OSPF) and a ``daemons`` file.

What each node gets:
- OSPF (area 0) on every tunnel interface as a point-to-point network with fast timers
  (hello 1 s, dead 4 s; SPF and LSA throttling at their minimum), so a lost tunnel or
  a new route is known within a second or so; the tunnels' ``ospf_cost`` if given.
- Its own subnets (and, on the clients' node, the clients' subnet) as passive area-0
  networks: announced, but no hellos go out on LANs (nor into a tunnel whose far end
  runs no OSPF). IPv4 only: OSPFv2 carries no IPv6 prefixes (no ospf6d here).
- On the entry, with ``kernel.export_table`` set: zebra imports that table (the host
  routes iptserver learned from DNS answers, each out of its exit's tunnel) and OSPF
  announces them, tagged with the table number. The nodes at the far end of an exit's
  tunnel refuse routes with that tag: each such route points at them, and taking it
  would send the traffic back into the tunnel it came out of.

Pure and deterministic: the same schema gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from iptserver.mesh.topology import Link, Mesh, Node
from iptserver.render.files import Rendered
from iptserver.render.wireguard import RenderError
from iptserver.schema.model import Schema
from iptserver.schema.values import IPNetwork

HELLO = 1  # seconds
DEAD = 4  # seconds: four hellos missed
SPF_THROTTLE = (0, 50, 500)  # delay, initial hold, max hold (ms)
IMPORT_TABLES = range(1, 253)  # what zebra's `ip import-table` accepts
LEARNED = "IPTS-LEARNED"
NOT_LEARNED = "IPTS-NOT-LEARNED"
DAEMONS = ("zebra", "ospfd")
OTHER_DAEMONS = (
    *("bgpd", "ospf6d", "ripd", "ripngd", "isisd", "pimd", "ldpd", "nhrpd"),
    *("eigrpd", "babeld", "sharpd", "pbrd", "bfdd", "fabricd", "vrrpd", "pathd"),
)


@dataclass(frozen=True)
class FrrRender:
    files: tuple[Rendered, ...]
    notes: tuple[str, ...]  # nodes skipped, and why (for stderr)


def exit_peers(mesh: Mesh, schema: Schema) -> frozenset[str]:
    """The nodes at the far end of a tunnel the entry uses as an exit."""
    exit_interfaces = {e.interface for e in schema.exits.values()}
    return frozenset(
        link.peer_node
        for node in mesh.nodes.values()
        if node.entry
        for link in node.links
        if link.interface in exit_interfaces
    )


def _announced(mesh: Mesh, node: Node) -> list[IPNetwork]:
    nets = [link.address.network for link in node.links if link.address.version == 4]
    nets += [net for net in node.subnets if net.version == 4]
    clients = mesh.clients
    if clients is not None and clients.node == node.name and clients.subnet.version == 4:
        nets.append(clients.subnet)
    return list(dict.fromkeys(nets))


def frr_conf(mesh: Mesh, node: Node, *, export_table: int | None, refuse_tag: int | None) -> str:
    """One node's frr.conf. ``export_table``: this node announces that table's routes
    (the entry); ``refuse_tag``: this node takes no OSPF route carrying that tag."""
    lines = [
        f"! {node.name}: zebra and OSPF for the mesh.",
        "! Rendered by `iptserver render frr`; edit the schema, not this file.",
        "frr defaults traditional",
        f"hostname {node.name}",
        "service integrated-vtysh-config",
        "!",
    ]
    if export_table is not None:
        lines += _export(export_table)
    if refuse_tag is not None:
        lines += _refuse(refuse_tag)
    for link in node.links:
        lines += _interface(mesh, link)
    lines += _router(mesh, node, export_table)
    return "\n".join(lines) + "\n"


def _export(table: int) -> list[str]:
    """Import the learned routes' table into zebra, tagged for the route-map."""
    return [
        "! The host routes iptserver learned from DNS answers (kernel.export_table).",
        f"ip import-table {table}",
        f"route-map {LEARNED} permit 10",
        f" set tag {table}",
        "exit",
        "!",
    ]


def _refuse(tag: int) -> list[str]:
    """Keep OSPF routes with ``tag`` out of this node's kernel."""
    return [
        "! Routes the entry learned from DNS point at this exit: taking them would send",
        "! that traffic back to the entry.",
        f"route-map {NOT_LEARNED} deny 10",
        f" match tag {tag}",
        "exit",
        f"route-map {NOT_LEARNED} permit 20",
        "exit",
        f"ip protocol ospf route-map {NOT_LEARNED}",
        "!",
    ]


def _interface(mesh: Mesh, link: Link) -> list[str]:
    """A tunnel as a point-to-point OSPF link with fast timers."""
    lines = [
        f"interface {link.interface}",
        f" description tunnel {link.tunnel} to {link.peer_node}",
        " ip ospf network point-to-point",
        f" ip ospf hello-interval {HELLO}",
        f" ip ospf dead-interval {DEAD}",
    ]
    if link.ospf_cost is not None:
        lines.append(f" ip ospf cost {link.ospf_cost}")
    peer = mesh.nodes.get(link.peer_node)
    if peer is None or peer.ospf:
        lines.append(" no ip ospf passive")
    else:  # announced, but no hellos to a peer that runs no OSPF
        lines.append(f" ! passive: {link.peer_node} runs no OSPF")
    return [*lines, "exit", "!"]


def _router(mesh: Mesh, node: Node, export_table: int | None) -> list[str]:
    """The OSPF process: throttling at its minimum, the node's networks in area 0."""
    lines = ["router ospf"]
    if node.router_id is not None:
        lines.append(f" ospf router-id {node.router_id}")
    delay, initial, maximum = SPF_THROTTLE
    lines += [
        " passive-interface default",
        f" timers throttle spf {delay} {initial} {maximum}",
        " timers throttle lsa all 0",
        " timers lsa min-arrival 0",
    ]
    lines += [f" network {net} area 0" for net in _announced(mesh, node)]
    if export_table is not None:
        lines.append(f" redistribute table {export_table} route-map {LEARNED}")
    return [*lines, "exit", "!"]


def daemons_file(node: Node) -> str:
    """FRR's ``daemons`` file: zebra (always started) and ospfd, nothing else."""
    lines = [
        f"# {node.name}: the FRR daemons the mesh needs.",
        "# Rendered by `iptserver render frr`; edit the schema, not this file.",
        *(f"{daemon}=yes" for daemon in DAEMONS if daemon != "zebra"),
        *(f"{daemon}=no" for daemon in OTHER_DAEMONS),
        "vtysh_enable=yes",
        'zebra_options="  -A 127.0.0.1 -s 90000000"',
        'ospfd_options="  -A 127.0.0.1"',
    ]
    return "\n".join(lines) + "\n"


def render_frr(mesh: Mesh, schema: Schema, node: str | None = None) -> FrrRender:
    """frr.conf and daemons for every node that runs OSPF (or for one node)."""
    export_table = schema.kernel.export_table
    if export_table is not None and export_table not in IMPORT_TABLES:
        raise RenderError(
            f"kernel.export_table: {export_table}: FRR imports routing tables "
            f"{IMPORT_TABLES.start}-{IMPORT_TABLES.stop - 1} only (zebra `ip import-table`)"
        )
    if node is not None:
        try:
            chosen = [mesh.node(node)]
        except KeyError as e:
            raise RenderError(str(e.args[0])) from None
    else:
        chosen = list(mesh.nodes.values())
    refusing = exit_peers(mesh, schema) if export_table is not None else frozenset()
    files: list[Rendered] = []
    notes: list[str] = []
    for each in chosen:
        if each.mikrotik:
            notes.append(f"{each.name}: a RouterOS peer, skipped (its OSPF is in its script)")
            continue
        if not each.ospf:
            notes.append(f"{each.name}: ospf: false, skipped")
            continue
        text = frr_conf(
            mesh,
            each,
            export_table=export_table if each.entry else None,
            refuse_tag=export_table if each.name in refusing else None,
        )
        files.append(Rendered(PurePosixPath(each.name, "frr.conf"), text))
        files.append(Rendered(PurePosixPath(each.name, "daemons"), daemons_file(each)))
    if not files:
        where = f"node {node!r}" if node is not None else "the schema"
        raise RenderError(f"{where}: no node runs OSPF (nodes need tunnels and ospf: true)")
    return FrrRender(tuple(files), tuple(notes))
