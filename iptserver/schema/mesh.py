"""The mesh part of the schema: nodes, the WireGuard tunnels between them, mobile clients.

Field names follow MRVPN2's ``tunnels:`` section (``expose``, ``allowed_nets``,
``masquerade``, ``table``, ``compose_service``, ``autostart``, ``mikrotik_*``) so that
section translates one to one. Checks that span sections (a tunnel's hosts are defined
nodes, addresses fit their subnets, interface names are unique on a node) are in
:func:`mesh_problems`, which names the offending path.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from difflib import get_close_matches
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    WithJsonSchema,
    field_validator,
)

from iptserver.schema.source import Path
from iptserver.schema.values import IPAddress, IPNetwork, Network

NodeName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
Interface = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.=-]{0,14}$")]
Port = Annotated[StrictInt, Field(ge=1, le=65535)]
TUNNEL_PORT_BASE = 51820
"""``expose: true`` listens on this plus the tunnel's 1-based position in the file."""

_ANYWHERE = ("0.0.0.0/0", "::/0")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_port(value: str | None) -> str | None:
    if value is None:
        return None
    host = value.strip()
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise ValueError(f"{value!r} is not a host name or IP address")
    if host.count(":") == 1 or (host.startswith("[") and "]:" in host):
        raise ValueError(f"{value!r}: give the host only; the port comes from the peer's expose")
    return host.strip("[]")


def _public_key(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"{value!r} is not a WireGuard key (44 characters of base64)")
    return value.strip()


def _expose(value: object) -> bool | int:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and 1 <= value <= 65535:
        return value
    raise ValueError(f"expose must be a UDP port (1-65535), true or false, not {value!r}")


Expose = Annotated[
    bool | int,
    PlainValidator(_expose),
    WithJsonSchema(
        {"anyOf": [{"type": "boolean"}, {"type": "integer", "minimum": 1, "maximum": 65535}]}
    ),
]


class Node(_Model):
    """A machine of the mesh (MRVPN2 took these from its Ansible inventory)."""

    endpoint: str | None = Field(
        None, description="Public host name or IP that peers dial (absent: it only dials out)"
    )
    subnets: list[Network] = Field(
        default_factory=list, description="LANs behind the node, announced into OSPF"
    )
    router_id: ipaddress.IPv4Address | None = Field(
        None, description="OSPF router id (default: the node's first IPv4 tunnel address)"
    )
    ospf: StrictBool = Field(True, description="Run FRR OSPF on this node")
    mikrotik: StrictBool = Field(
        False, description="A RouterOS peer: gets a RouterOS script instead of wg-quick/FRR files"
    )
    entry: StrictBool = Field(
        False, description="iptserver runs here; mobile clients use it for DNS"
    )
    compose: StrictBool = Field(
        False,
        description="An exit or office run as a docker compose stack of its own "
        "(`iptserver render compose --stack` renders every such node)",
    )
    send: Literal["learned", "policy", "all"] = Field(
        "learned",
        description="What of this node's subnets' traffic goes to the entry: learned (the "
        "DNS-learned destinations the entry exports over OSPF), policy (those, and the nets "
        "and country networks of rules with a tunnel exit, aggregated) or all (everything; "
        "the entry applies the whole schema, default included)",
    )

    check_endpoint = field_validator("endpoint")(_no_port)


class TunnelHost(_Model):
    """One side of a tunnel, on one node."""

    interface: Interface | None = Field(None, description="Interface name (default: the tunnel's)")
    expose: Expose = Field(
        False,
        description="UDP port this side listens on (true: 51820 + the tunnel's position); "
        "false: it dials out only",
    )
    allowed_nets: list[Network] = Field(
        default_factory=lambda: [ipaddress.ip_network(n) for n in _ANYWHERE],
        description="WireGuard AllowedIPs for the peer (default: everything; routing decides)",
    )
    masquerade: StrictBool = Field(False, description="NAT what leaves this node from the tunnel")
    table: str | None = Field(
        None, description="wg-quick Table (default: off where FRR runs, else auto)"
    )
    compose_service: str | None = Field(
        None, description="Compose service whose network namespace the tunnel runs in"
    )
    autostart: StrictBool = True
    mikrotik_deploy: list[str] = Field(default_factory=list, description="RouterOS commands")
    mikrotik_cleanup: list[str] = Field(default_factory=list, description="RouterOS commands")
    keepalive: Annotated[StrictInt, Field(ge=1, le=65535)] | None = Field(
        None, description="PersistentKeepalive seconds (default: 25 on a side that dials out)"
    )
    private_key_file: str | None = Field(
        None, description="Read the private key from this file instead of the state directory"
    )
    public_key: str | None = Field(
        None, description="The side's public key, when its private key is kept elsewhere"
    )
    ospf_cost: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None

    check_public_key = field_validator("public_key")(_public_key)

    @field_validator("table", mode="before")
    @classmethod
    def _table(cls, value: object) -> object:
        """wg-quick's ``Table = off`` written unquoted reads as YAML false."""
        if value is False:
            return "off"
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Tunnel(_Model):
    subnet: Network = Field(
        description="Point-to-point subnet: the hosts, in the order written, get its first "
        "and second host address"
    )
    subnet6: Network | None = Field(
        None,
        description="An IPv6 point-to-point subnet besides an IPv4 subnet (a dual-stack "
        "tunnel): the hosts get its first and second host address too",
    )
    preshared_key: StrictBool = Field(False, description="Add a generated preshared key")
    hosts: dict[NodeName, TunnelHost] = Field(description="The tunnel's two sides, by node")


class ClientPeer(_Model):
    address: IPAddress | None = Field(
        None, description="Address in clients.subnet (default: the next free one, in order)"
    )
    private_key_file: str | None = None
    public_key: str | None = Field(
        None, description="The client's public key, when it generated its own private key"
    )

    check_public_key = field_validator("public_key")(_public_key)


class Clients(_Model):
    """Mobile clients: one WireGuard interface on one node, a peer each."""

    node: NodeName | None = Field(
        None, description="The node the clients connect to (or nodes, for several entries)"
    )
    nodes: list[NodeName] = Field(
        default_factory=list,
        description="The entries the clients may use: each gets the clients' interface, "
        "subnet and peers, and each client a config per entry (instead of node)",
    )
    interface: Interface = "wg-clients"
    subnet: Network = Field(description="The node takes the first host address, peers the rest")
    port: Port = 51820
    dns: list[IPAddress] = Field(
        default_factory=list, description="DNS servers for clients (default: the node's address)"
    )
    allowed_ips: list[Network] = Field(
        default_factory=lambda: [ipaddress.ip_network(n) for n in _ANYWHERE],
        description="What clients send into the tunnel (default: everything)",
    )
    keepalive: Annotated[StrictInt, Field(ge=1, le=65535)] | None = 25
    peers: dict[NodeName, ClientPeer] = Field(default_factory=dict)

    @property
    def entries(self) -> tuple[str, ...]:
        """The nodes the clients connect to: ``node``, or ``nodes`` in order."""
        return (self.node,) if self.node is not None else tuple(dict.fromkeys(self.nodes))


Problems = list[tuple[Path, str]]


def mesh_problems(
    nodes: dict[str, Node], tunnels: dict[str, Tunnel], clients: Clients | None
) -> Problems:
    """What the model alone cannot see: references between sections, address fit."""
    problems = _entry_problems(nodes) + _send_problems(nodes, tunnels) + _compose_problems(nodes)
    claims = _Claims()  # shared: a tunnel and the clients must not take the same port
    for position, (name, tunnel) in enumerate(tunnels.items(), start=1):
        problems += _tunnel_problems(name, position, tunnel, nodes, claims)
    if clients is not None:
        problems += _clients_problems(nodes, clients, claims)
    return problems


def _clients_problems(nodes: dict[str, Node], clients: Clients, claims: _Claims) -> Problems:
    """``node`` or ``nodes`` (entries), each with the clients' interface and port free."""
    base: Path = ("clients",)
    if clients.node is not None and clients.nodes:
        return [((*base, "nodes"), "give node (one) or nodes (several entries), not both")]
    if clients.node is None and not clients.nodes:
        return [
            (
                (*base, "node"),
                "name the node the clients connect to (node: NAME, or "
                "nodes: [NAME, ...] for several entries)",
            )
        ]
    problems: Problems = []
    field = "node" if clients.node is not None else "nodes"
    seen: set[str] = set()
    for i, name in enumerate([clients.node] if clients.node is not None else clients.nodes):
        assert name is not None
        path: Path = (*base, field) if field == "node" else (*base, field, i)
        if name in seen:
            problems.append((path, f"node {name!r} is listed twice"))
            continue
        seen.add(name)
        problems += _unknown_node(nodes, name, path)
        if field == "nodes" and name in nodes and not nodes[name].entry:
            problems.append(
                (path, f"node {name!r} is no entry (clients.nodes lists entries: entry: true)")
            )
        problems += claims.claim(name, clients.port, (*base, "port"))
        problems += claims.claim(name, clients.interface, (*base, "interface"))
    return problems + _client_addresses(clients)


class _Claims:
    """Interface names and UDP ports per node, each with the path that took it first."""

    def __init__(self) -> None:
        self._first: dict[tuple[str, str | int], Path] = {}

    def claim(self, node: str, thing: str | int, path: Path) -> Problems:
        """Nothing when ``thing`` is free on ``node``; else the clash, naming the first."""
        if (node, thing) not in self._first:
            self._first[node, thing] = path
            return []
        where = ".".join(str(p) for p in self._first[node, thing])
        if isinstance(thing, str):
            return [(path, f"interface {thing!r} is already used on node {node!r} by {where}")]
        return [(path, f"UDP port {thing} is already listened on by node {node!r} ({where})")]


def _entry_problems(nodes: dict[str, Node]) -> Problems:
    """Several entries may run iptserver; a RouterOS peer cannot."""
    return [
        (("nodes", name, "entry"), "a RouterOS peer runs no iptserver: it cannot be an entry")
        for name, node in nodes.items()
        if node.entry and node.mikrotik
    ]


def entries_of(nodes: dict[str, Node]) -> list[str]:
    """The entry nodes (``entry: true``), in the order written."""
    return [name for name, node in nodes.items() if node.entry]


def _compose_problems(nodes: dict[str, Node]) -> Problems:
    """A stack of its own is for exits and offices that run wg-quick and FRR."""
    problems: Problems = []
    for name, node in nodes.items():
        path: Path = ("nodes", name, "compose")
        if node.compose and node.entry:
            problems.append((path, "the entry runs beside its host service (compose_service)"))
        elif node.compose and node.mikrotik:
            problems.append((path, "a RouterOS peer runs no containers"))
    return problems


def _send_problems(nodes: dict[str, Node], tunnels: dict[str, Tunnel]) -> Problems:
    """``send: policy`` and ``all`` need LANs to send from, a tunnel to the entry that
    carries everything, and a Linux node (FRR route-maps, wg-quick)."""
    entries = set(entries_of(nodes))
    problems: Problems = []
    for name, node in nodes.items():
        if node.send == "learned":
            continue
        path: Path = ("nodes", name, "send")
        mode = f"send: {node.send}"
        if node.entry:
            problems.append((path, f"the entry sends nothing to itself: {mode} is for offices"))
        elif node.mikrotik:
            problems.append((path, f"{mode} is rendered for Linux nodes (FRR, wg-quick) only"))
        elif not node.ospf and node.send == "policy":
            problems.append((path, "send: policy takes its routes from OSPF: set ospf: true"))
        elif not node.subnets:
            problems.append((path, f"{mode} needs the node's subnets (nothing to send from)"))
        elif not (links := [(n, t) for n, t in tunnels.items() if _to_entry(name, t, entries)]):
            problems.append((path, f"{mode} needs a tunnel between {name!r} and the entry"))
        elif node.send == "all" and len(links) > 1:
            problems.append(
                (
                    path,
                    f"send: all over tunnels to several entries ({', '.join(n for n, _ in links)})"
                    " is not supported: the node's default would follow one tunnel whether "
                    "or not its entry is alive; use send: learned or policy (OSPF moves those)",
                )
            )
        else:
            for tunnel_name, tunnel in links:
                nets = tunnel.hosts[name].allowed_nets
                for version in sorted({net.version for net in node.subnets}):
                    if not any(n.prefixlen == 0 and n.version == version for n in nets):
                        everything = _ANYWHERE[0 if version == 4 else 1]
                        problems.append(
                            (
                                ("tunnels", tunnel_name, "hosts", name, "allowed_nets"),
                                f"{mode} on {name!r}: allowed_nets must hold {everything} "
                                "(WireGuard sends the entry only what they cover)",
                            )
                        )
    return problems


def ingress_problems(
    nodes: dict[str, Node], tunnels: dict[str, Tunnel], ingress: list[str]
) -> Problems:
    """The entry's end of a ``send: policy`` or ``all`` node's tunnel must be an ingress:
    else the office's traffic reaches the entry unmarked and leaves as the entry's main
    table says, whatever the schema says."""
    entries = set(entries_of(nodes))
    problems: Problems = []
    for name, node in nodes.items():
        if node.send == "learned" or node.entry:
            continue
        for tunnel_name, tunnel in tunnels.items():
            if not _to_entry(name, tunnel, entries):
                continue
            (entry,) = set(tunnel.hosts) - {name}
            interface = tunnel.hosts[entry].interface or tunnel_name
            if interface not in ingress:
                problems.append(
                    (
                        ("nodes", name, "send"),
                        f"send: {node.send}: add the entry's end of tunnel {tunnel_name!r} "
                        f"({interface}) to ingress, or the entry routes none of it",
                    )
                )
    return problems


def _to_entry(name: str, tunnel: Tunnel, entries: set[str]) -> bool:
    """The tunnel joins node ``name`` and one of the entries."""
    others = set(tunnel.hosts) - {name}
    return name in tunnel.hosts and len(others) == 1 and others <= entries


IMPORT_TABLES = range(1, 253)  # the tables zebra's `ip import-table` takes


def policy_table(export_table: int | None, policy_table: int | None) -> int | None:
    """The routing table of the routes ``send: policy`` nodes take (kernel.policy_table,
    default the one after kernel.export_table)."""
    if policy_table is not None:
        return policy_table
    return export_table + 1 if export_table is not None else None


def policy_problems(
    nodes: dict[str, Node], export_table: int | None, chosen: int | None
) -> Problems:
    """``send: policy`` is announced by FRR from a table beside kernel.export_table."""
    senders = [name for name, node in nodes.items() if node.send == "policy" and not node.entry]
    if not senders:
        return []
    if export_table is None:
        return [
            (
                ("nodes", senders[0], "send"),
                "send: policy needs kernel.export_table (the entry announces routes over "
                "OSPF from routing tables FRR imports)",
            )
        ]
    table = policy_table(export_table, chosen)
    path: Path = ("kernel", "policy_table" if chosen is not None else "export_table")
    if table not in IMPORT_TABLES:
        return [
            (
                path,
                f"send: policy puts its routes in table {table}: FRR imports tables "
                f"{IMPORT_TABLES.start}-{IMPORT_TABLES.stop - 1} only (set kernel.policy_table)",
            )
        ]
    if table == export_table:
        return [(path, f"table {table} is kernel.export_table: give the policy routes another")]
    return []


def _unknown_node(nodes: dict[str, Node], name: str, path: Path) -> Problems:
    """A reference to a node that is not defined (none are: the mesh is not described)."""
    if not nodes or name in nodes:
        return []
    return [(path, f"node {name!r} is not defined under nodes{_did_you_mean(name, set(nodes))}")]


def _tunnel_problems(
    name: str, position: int, tunnel: Tunnel, nodes: dict[str, Node], claims: _Claims
) -> Problems:
    """Two hosts, room for their addresses, defined nodes, unique interfaces and ports."""
    base: Path = ("tunnels", name)
    problems: Problems = []
    if len(tunnel.hosts) != 2:
        count = f"a tunnel joins exactly two hosts, this one lists {len(tunnel.hosts)}"
        problems.append(((*base, "hosts"), count))
    if _host_count(tunnel.subnet) < 2:
        problems.append(
            (
                (*base, "subnet"),
                f"{tunnel.subnet} has fewer than two host addresses "
                "(use a /30 or /31, or a /126 or /127)",
            )
        )
    problems += _subnet6_problems(tunnel, base)
    for host, side in tunnel.hosts.items():
        path: Path = (*base, "hosts", host)
        problems += _unknown_node(nodes, host, path)
        problems += claims.claim(host, side.interface or name, path)
        if side.private_key_file and side.public_key:
            problems.append(
                ((*path, "public_key"), "give private_key_file or public_key, not both")
            )
        port = TUNNEL_PORT_BASE + position if side.expose is True else side.expose
        if port:
            problems += claims.claim(host, int(port), (*path, "expose"))
    return problems


def _subnet6_problems(tunnel: Tunnel, base: Path) -> Problems:
    """``subnet6`` is the IPv6 half of a dual-stack tunnel whose ``subnet`` is IPv4."""
    net = tunnel.subnet6
    path: Path = (*base, "subnet6")
    if net is None:
        return []
    if net.version != 6:
        return [(path, f"{net} is not an IPv6 subnet (subnet6 is the tunnel's IPv6 subnet)")]
    if tunnel.subnet.version != 4:
        return [(path, f"subnet {tunnel.subnet} is IPv6 already: give subnet6 with an IPv4 subnet")]
    if _host_count(net) < 2:
        return [(path, f"{net} has fewer than two host addresses (use a /126 or /127, or a /64)")]
    return []


def _host_count(net: IPNetwork) -> int:
    return net.num_addresses if net.prefixlen >= net.max_prefixlen - 1 else net.num_addresses - 2


def _client_addresses(clients: Clients) -> Problems:
    problems: Problems = []
    subnet = clients.subnet
    first = next(iter(subnet.hosts()), None)
    taken: dict[IPAddress, str] = {}
    for name, peer in clients.peers.items():
        if peer.address is None:
            continue
        path: Path = ("clients", "peers", name, "address")
        if peer.address not in subnet or peer.address in (
            subnet.network_address,
            subnet.broadcast_address,
        ):
            problems.append((path, f"{peer.address} is not a host address of {subnet}"))
        elif peer.address == first:
            problems.append((path, f"{peer.address} is the node's own address in {subnet}"))
        elif peer.address in taken:
            problems.append((path, f"{peer.address} is already given to {taken[peer.address]!r}"))
        taken.setdefault(peer.address, name)
    automatic = sum(1 for peer in clients.peers.values() if peer.address is None)
    if automatic and _host_count(subnet) - 1 - len(taken) < automatic:
        problems.append(
            (("clients", "subnet"), f"{subnet} has no room for {len(clients.peers)} clients")
        )
    return problems


def _did_you_mean(name: str, names: set[str]) -> str:
    close = get_close_matches(name, sorted(names), n=1)
    return f"; did you mean {close[0]!r}?" if close else f" (defined: {', '.join(sorted(names))})"
