"""FRR configs for the mesh: per node an ``frr.conf`` (zebra + OSPF) and a ``daemons`` file.

What each node gets:
- OSPF (area 0) on every tunnel interface as a point-to-point network with fast timers
  (hello 1 s, dead 4 s; SPF and LSA throttling at their minimum), so a lost tunnel or
  a new route is known within a second or so; the tunnels' ``ospf_cost`` if given.
- Its own subnets (and, on the clients' node, the clients' subnet) as passive area-0
  networks: announced, but no hellos go out on LANs (nor into a tunnel whose far end
  runs no OSPF).
- IPv6, on a node with an IPv6 tunnel address (``subnet6``, or an IPv6 ``subnet``): OSPFv3
  (ospf6d) beside OSPFv2, the same way on the tunnels; its IPv6 subnets are redistributed
  as connected routes (OSPFv3 puts interfaces, not networks, in areas, and a LAN's name is
  not in the schema). FRR 8.4 imports no IPv6 table (no ``ipv6 import-table``; ospf6d
  redistributes no ``table N``), so iptserver also puts each IPv6 host route it exports in
  ``main``, where the entry's ospf6d takes the /128s of the kernel (``redistribute
  kernel``), tagged like the IPv4 ones; the exits' nodes refuse the tag
  (``ipv6 protocol ospf6``).
- On the entry, with ``kernel.export_table`` set: zebra imports that table (the host
  routes iptserver learned from DNS answers, each out of its exit's tunnel) and OSPF
  announces them, tagged with the table number. The nodes at the far end of an exit's
  tunnel refuse routes with that tag: each such route points at them, and taking it
  would send the traffic back into the tunnel it came out of.
- With a node that has ``send: policy``: the entry also imports ``kernel.policy_table``
  (the nets and country networks of rules with a tunnel exit, aggregated) and announces
  it tagged with that number; every other node but the entry refuses that tag (OSPF
  floods the LSAs to all, but only the nodes that asked route by them).
- With several entries (``entry: true`` on each): each imports and announces its own
  tables, tagged alike, and refuses those tags from OSPF: an entry routes what its
  clients and offices send by its own policy, never into another entry. An office takes
  each learned route from the entry that announced it at the lowest cost (the tunnels'
  ``ospf_cost``), and from another entry that learned it too once the first is gone.

Pure and deterministic: the same schema gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from iptserver.mesh.topology import Link, Mesh, Node
from iptserver.render.files import Rendered
from iptserver.render.wireguard import RenderError
from iptserver.schema.entries import Resolver
from iptserver.schema.mesh import IMPORT_TABLES
from iptserver.schema.model import Schema
from iptserver.schema.values import IPNetwork

HELLO = 1  # seconds
DEAD = 4  # seconds: four hellos missed
SPF_THROTTLE = (0, 50, 500)  # delay, initial hold, max hold (ms)
ZEBRA_NETLINK_BUFFER = 90_000_000  # bytes: a policy table's 100,000s of route events
LEARNED = "IPTS-LEARNED"
POLICY = "IPTS-POLICY"
REFUSED = "IPTS-REFUSED"
BACK_INTO_TUNNEL = "routes out of this exit's tunnel: following them loops back to the entry."
NOT_ASKED = "the nets of the entry's policy, for nodes with send: policy only."
OTHER_ENTRY = "another entry's routes: each entry routes by its own policy."
DAEMONS = ("zebra", "ospfd")
LEARNED6 = "IPTS-LEARNED6"
SUBNETS6 = "IPTS-SUBNETS6"
OTHER_DAEMONS = (
    *("bgpd", "ospf6d", "ripd", "ripngd", "isisd", "pimd", "ldpd", "nhrpd"),
    *("eigrpd", "babeld", "sharpd", "pbrd", "bfdd", "fabricd", "vrrpd", "pathd"),
)


@dataclass(frozen=True)
class FrrRender:
    files: tuple[Rendered, ...]
    notes: tuple[str, ...]  # nodes skipped, and why (for stderr)


def exit_peers(mesh: Mesh, schema: Schema) -> frozenset[str]:
    """The nodes at the far end of a tunnel an entry uses as an exit (each entry's own
    names for the exits' interfaces: ``iptserver.schema.entries``)."""
    resolver = Resolver(schema)
    return frozenset(
        link.peer_node
        for node in mesh.nodes.values()
        if node.entry
        for link in node.links
        if link.interface
        in {resolver.interface(e.interface, node.name) for e in schema.exits.values()}
    )


def _announced(mesh: Mesh, node: Node) -> list[IPNetwork]:
    nets = [link.address.network for link in node.links if link.address.version == 4]
    nets += [net for net in node.subnets if net.version == 4]
    clients = mesh.clients_on(node.name)
    if clients is not None and clients.subnet.version == 4:
        nets.append(clients.subnet)
    return list(dict.fromkeys(nets))


def frr_conf(
    mesh: Mesh,
    node: Node,
    *,
    export_table: int | None,
    refuse_tags: tuple[tuple[int, str], ...] = (),
    policy_table: int | None = None,
) -> str:
    """One node's frr.conf. ``export_table`` and ``policy_table``: this node announces
    those tables' routes (the entry), each tagged with its table's number;
    ``refuse_tags``: this node takes no OSPF route carrying one of them."""
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
    if policy_table is not None:
        lines += _export(policy_table, POLICY)
    if runs_ospf6(node):
        lines += _ospf6_filters(mesh, node, export_table)
    if refuse_tags:
        lines += _refuse(refuse_tags)
    for link in node.links:
        lines += _interface(mesh, link)
    lines += _router(mesh, node, export_table, policy_table)
    if runs_ospf6(node):
        lines += _router6(mesh, node, export_table, refuse=bool(refuse_tags))
    return "\n".join(lines) + "\n"


def _export(table: int, route_map: str = LEARNED) -> list[str]:
    """Import a table of iptserver's into zebra, tagged for the route-map."""
    what = (
        "The host routes iptserver learned from DNS answers (kernel.export_table)."
        if route_map == LEARNED
        else "The nets of rules with a tunnel exit, for send: policy (kernel.policy_table)."
    )
    return [
        f"! {what}",
        f"ip import-table {table}",
        f"route-map {route_map} permit 10",
        f" set tag {table}",
        "exit",
        "!",
    ]


def _refuse(tags: tuple[tuple[int, str], ...]) -> list[str]:
    """Keep OSPF routes with one of ``tags`` (each with why) out of this node's kernel."""
    lines = []
    for position, (tag, why) in enumerate(tags, start=1):
        lines += [
            f"! Tag {tag}: {why}",
            f"route-map {REFUSED} deny {position * 10}",
            f" match tag {tag}",
            "exit",
        ]
    return [
        *lines,
        f"route-map {REFUSED} permit {(len(tags) + 1) * 10}",
        "exit",
        f"ip protocol ospf route-map {REFUSED}",
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
    if link.ipv6 is not None:
        lines += [
            " ipv6 ospf6 area 0",
            " ipv6 ospf6 network point-to-point",
            f" ipv6 ospf6 hello-interval {HELLO}",
            f" ipv6 ospf6 dead-interval {DEAD}",
        ]
        if link.ospf_cost is not None:
            lines.append(f" ipv6 ospf6 cost {link.ospf_cost}")
        if peer is not None and not peer.ospf:
            lines.append(" ipv6 ospf6 passive")
    return [*lines, "exit", "!"]


def _router(
    mesh: Mesh, node: Node, export_table: int | None, policy_table: int | None
) -> list[str]:
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
    if policy_table is not None:
        lines.append(f" redistribute table {policy_table} route-map {POLICY}")
    return [*lines, "exit", "!"]


def runs_ospf6(node: Node) -> bool:
    """OSPFv3 runs where a tunnel carries IPv6: a neighbour to announce to."""
    return any(link.ipv6 is not None for link in node.links)


def _subnets6(mesh: Mesh, node: Node) -> list[IPNetwork]:
    nets = [net for net in node.subnets if net.version == 6]
    clients = mesh.clients_on(node.name)
    if clients is not None and clients.subnet.version == 6:
        nets.append(clients.subnet)
    return list(dict.fromkeys(nets))


def _ospf6_filters(mesh: Mesh, node: Node, export_table: int | None) -> list[str]:
    """Prefix lists and route-maps of what ospf6d redistributes: the node's IPv6
    subnets and, on the entry, the learned IPv6 host routes (in ``main``, see above)."""
    lines = []
    subnets = _subnets6(mesh, node)
    if subnets:
        lines.append("! The node's IPv6 subnets (OSPFv3 announces them as external routes).")
        lines += [
            f"ipv6 prefix-list {SUBNETS6} seq {5 * n} permit {net}"
            for n, net in enumerate(subnets, start=1)
        ]
        lines += [
            f"route-map {SUBNETS6} permit 10",
            f" match ipv6 address prefix-list {SUBNETS6}",
            "exit",
            "!",
        ]
    if export_table is not None:
        lines += [
            "! The IPv6 host routes iptserver learned from DNS answers: FRR 8.4 imports no",
            "! IPv6 table, so iptserver puts them in main too, where these /128s are its.",
            f"ipv6 prefix-list {LEARNED6} seq 5 permit ::/0 ge 128",
            f"route-map {LEARNED6} permit 10",
            f" match ipv6 address prefix-list {LEARNED6}",
            f" set tag {export_table}",
            "exit",
            "!",
        ]
    return lines


def _router6(mesh: Mesh, node: Node, export_table: int | None, *, refuse: bool) -> list[str]:
    """The OSPFv3 process: as fast as OSPFv2's; the tunnels are in area 0 by their
    interfaces; ``refuse``: the IPv4 route-map that refuses tags applies to IPv6 too."""
    lines = ["router ospf6"]
    if node.router_id is not None:
        lines.append(f" ospf6 router-id {node.router_id}")
    delay, initial, maximum = SPF_THROTTLE
    lines += [f" timers throttle spf {delay} {initial} {maximum}", " timers lsa min-arrival 0"]
    if _subnets6(mesh, node):
        lines.append(f" redistribute connected route-map {SUBNETS6}")
    if export_table is not None:
        lines.append(f" redistribute kernel route-map {LEARNED6}")
    lines += ["exit", "!"]
    if refuse:
        lines += [f"ipv6 protocol ospf6 route-map {REFUSED}", "!"]
    return lines


def daemons_file(node: Node) -> str:
    """FRR's ``daemons`` file: zebra (always started), ospfd, and ospf6d where a tunnel
    carries IPv6; nothing else."""
    wanted = (*DAEMONS, "ospf6d") if runs_ospf6(node) else DAEMONS
    lines = [
        f"# {node.name}: the FRR daemons the mesh needs.",
        "# Rendered by `iptserver render frr`; edit the schema, not this file.",
        *(f"{daemon}=yes" for daemon in wanted if daemon != "zebra"),
        *(f"{daemon}=no" for daemon in OTHER_DAEMONS if daemon not in wanted),
        "vtysh_enable=yes",
        f'zebra_options="  -A 127.0.0.1 -s {ZEBRA_NETLINK_BUFFER}"',
        'ospfd_options="  -A 127.0.0.1"',
    ]
    if "ospf6d" in wanted:
        lines.append('ospf6d_options="  -A ::1"')
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
    policy_table = schema.policy_table()
    refusing = exit_peers(mesh, schema) if export_table is not None else frozenset()
    several_entries = sum(1 for n in mesh.nodes.values() if n.entry) > 1
    files: list[Rendered] = []
    notes: list[str] = []
    for each in chosen:
        if each.mikrotik:
            notes.append(f"{each.name}: a RouterOS peer, skipped (its OSPF is in its script)")
            continue
        if not each.ospf:
            notes.append(f"{each.name}: ospf: false, skipped")
            continue
        refused: tuple[tuple[int, str], ...] = ()
        if export_table is not None and each.name in refusing:
            refused = ((export_table, BACK_INTO_TUNNEL),)
        if each.entry and several_entries:
            tables = (export_table, policy_table)
            refused = tuple((table, OTHER_ENTRY) for table in tables if table is not None)
        if policy_table is not None and not each.entry:
            if each.name in refusing:
                refused += ((policy_table, BACK_INTO_TUNNEL),)
            elif schema.nodes[each.name].send != "policy":
                refused += ((policy_table, NOT_ASKED),)
        text = frr_conf(
            mesh,
            each,
            export_table=export_table if each.entry else None,
            refuse_tags=refused,
            policy_table=policy_table if each.entry else None,
        )
        files.append(Rendered(PurePosixPath(each.name, "frr.conf"), text))
        files.append(Rendered(PurePosixPath(each.name, "daemons"), daemons_file(each)))
    if not files:
        where = f"node {node!r}" if node is not None else "the schema"
        raise RenderError(f"{where}: no node runs OSPF (nodes need tunnels and ospf: true)")
    return FrrRender(tuple(files), tuple(notes))
