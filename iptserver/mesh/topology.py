"""The mesh worked out from the schema: each node's tunnel ends with their addresses,
ports and peers. Pure and deterministic, so every render of a schema agrees."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass

from iptserver.schema.mesh import TUNNEL_PORT_BASE, TunnelHost
from iptserver.schema.model import Schema
from iptserver.schema.values import IPAddress, IPNetwork

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
KEEPALIVE = 25
"""Seconds between keepalives from a side that dials out (NAT mappings outlive it)."""


@dataclass(frozen=True)
class Link:
    """One end of a tunnel, on ``node``."""

    tunnel: str
    node: str
    interface: str
    address: IPInterface
    peer_node: str
    peer_interface: str
    peer_address: IPInterface
    listen_port: int | None
    peer_endpoint: str | None  # "host:port" to dial, if the peer listens and is reachable
    allowed_nets: tuple[IPNetwork, ...]
    masquerade: bool
    table: str | None
    keepalive: int | None
    ospf_cost: int | None
    compose_service: str | None
    autostart: bool
    mikrotik_deploy: tuple[str, ...]
    mikrotik_cleanup: tuple[str, ...]
    preshared: bool
    private_key_file: str | None
    public_key: str | None  # given in the schema (private key kept elsewhere)
    peer_private_key_file: str | None
    peer_public_key: str | None
    # With ``send: all``, on the node's tunnel to the entry: the subnets whose traffic is
    # all policy-routed into it (what is more specific in main, OSPF's too, still wins).
    send_all: tuple[IPNetwork, ...] = ()
    # A dual-stack tunnel (``subnet6``): the IPv6 addresses besides the IPv4 ones.
    address6: IPInterface | None = None
    peer_address6: IPInterface | None = None

    @property
    def addresses(self) -> tuple[IPInterface, ...]:
        """The end's addresses: ``address``, then the IPv6 one of a dual-stack tunnel."""
        return (self.address,) if self.address6 is None else (self.address, self.address6)

    @property
    def ipv6(self) -> IPInterface | None:
        """The end's IPv6 address, if the tunnel carries IPv6."""
        return self.address if self.address.version == 6 else self.address6


@dataclass(frozen=True)
class Node:
    name: str
    endpoint: str | None
    subnets: tuple[IPNetwork, ...]
    router_id: ipaddress.IPv4Address | None
    ospf: bool
    mikrotik: bool
    entry: bool
    links: tuple[Link, ...]


@dataclass(frozen=True)
class ClientPeer:
    name: str
    address: IPAddress
    private_key_file: str | None
    public_key: str | None


@dataclass(frozen=True)
class Clients:
    node: str
    interface: str
    subnet: IPNetwork
    address: IPInterface  # the node's own, with the subnet's prefix length
    port: int
    endpoint: str | None  # "host:port" clients dial
    dns: tuple[IPAddress, ...]
    allowed_ips: tuple[IPNetwork, ...]
    keepalive: int | None
    peers: tuple[ClientPeer, ...]


@dataclass(frozen=True)
class Mesh:
    nodes: dict[str, Node]
    clients: Clients | None  # on the (first) node the clients connect to
    subnets: tuple[IPNetwork, ...]  # never diverted: tunnels', nodes', clients'
    # The clients on each entry they may use (``clients.nodes``): the same peers,
    # addresses and DNS, each entry's endpoint and key.
    all_clients: tuple[Clients, ...] = ()

    def clients_on(self, node: str) -> Clients | None:
        """The clients' interface on ``node``, if the clients connect to it."""
        return next((c for c in self.all_clients if c.node == node), None)

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(self.nodes) or "none"
            raise KeyError(f"no node {name!r} in the schema (nodes: {known})") from None


def _interface(address: IPAddress, net: IPNetwork) -> IPInterface:
    return ipaddress.ip_interface(f"{address}/{net.prefixlen}")


def _hosts(net: IPNetwork, count: int) -> list[IPAddress]:
    """The first ``count`` host addresses: both of a /31 or /127, else from .1 on."""
    first = int(net.network_address)
    if net.prefixlen < net.max_prefixlen - 1:
        first += 1
    return [ipaddress.ip_address(first + i) for i in range(count)]


def _dial(host: str | None, port: int | None) -> str | None:
    if host is None or port is None:
        return None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port(expose: bool | int, position: int) -> int | None:
    if expose is True:
        return TUNNEL_PORT_BASE + position
    if expose is False:
        return None
    return expose


def mesh_of(schema: Schema) -> Mesh:
    """The schema is validated (``mesh_problems`` passed): every name resolves."""
    declared = schema.nodes
    links: dict[str, list[Link]] = {name: [] for name in declared}
    for position, (name, tunnel) in enumerate(schema.tunnels.items(), start=1):
        (a, side_a), (b, side_b) = tunnel.hosts.items()
        addr_a, addr_b = _hosts(tunnel.subnet, 2)
        ends = ((a, side_a, addr_a, b, side_b, addr_b), (b, side_b, addr_b, a, side_a, addr_a))
        for node, side, address, peer, peer_side, peer_address in ends:
            peer_node = declared.get(peer)
            own_node = declared.get(node)
            peer_port = _port(peer_side.expose, position)
            port = _port(side.expose, position)
            links.setdefault(node, []).append(
                _link(
                    name,
                    node,
                    side,
                    _interface(address, tunnel.subnet),
                    peer,
                    peer_side,
                    _interface(peer_address, tunnel.subnet),
                    port,
                    _dial(peer_node.endpoint if peer_node else None, peer_port),
                    tunnel.preshared_key,
                    ospf=own_node.ospf if own_node else True,
                )
            )
        if tunnel.subnet6 is not None:
            six_a, six_b = (_interface(a6, tunnel.subnet6) for a6 in _hosts(tunnel.subnet6, 2))
            for node, mine, theirs in ((a, six_a, six_b), (b, six_b, six_a)):
                own = links[node]
                own[-1] = dataclasses.replace(own[-1], address6=mine, peer_address6=theirs)
    entries = {name for name, spec in declared.items() if spec.entry}
    for name, own in links.items():
        spec = declared.get(name)
        if spec is not None and spec.send == "all":
            subnets = tuple(spec.subnets)
            own[:] = [
                dataclasses.replace(link, send_all=subnets) if link.peer_node in entries else link
                for link in own
            ]
    nodes: dict[str, Node] = {}
    for name, own in links.items():
        spec = declared.get(name)
        v4 = [link.address.ip for link in own if link.address.version == 4]
        router_id = spec.router_id if spec and spec.router_id else None
        if router_id is None and v4:
            router_id = ipaddress.IPv4Address(v4[0])
        nodes[name] = Node(
            name=name,
            endpoint=spec.endpoint if spec else None,
            subnets=tuple(spec.subnets) if spec else (),
            router_id=router_id,
            ospf=spec.ospf if spec else True,
            mikrotik=spec.mikrotik if spec else False,
            entry=spec.entry if spec else False,
            links=tuple(own),
        )
    every = _clients(schema)
    return Mesh(nodes, every[0] if every else None, schema.never_diverted(), every)


def _link(
    tunnel: str,
    node: str,
    side: TunnelHost,
    address: IPInterface,
    peer: str,
    peer_side: TunnelHost,
    peer_address: IPInterface,
    port: int | None,
    peer_endpoint: str | None,
    preshared: bool,
    *,
    ospf: bool,
) -> Link:
    keepalive = side.keepalive
    if keepalive is None and port is None and peer_endpoint is not None:
        keepalive = KEEPALIVE
    return Link(
        tunnel=tunnel,
        node=node,
        interface=side.interface or tunnel,
        address=address,
        peer_node=peer,
        peer_interface=peer_side.interface or tunnel,
        peer_address=peer_address,
        listen_port=port,
        peer_endpoint=peer_endpoint,
        allowed_nets=tuple(side.allowed_nets),
        masquerade=side.masquerade,
        table=side.table if side.table is not None else ("off" if ospf else None),
        keepalive=keepalive,
        ospf_cost=side.ospf_cost,
        compose_service=side.compose_service,
        autostart=side.autostart,
        mikrotik_deploy=tuple(side.mikrotik_deploy),
        mikrotik_cleanup=tuple(side.mikrotik_cleanup),
        preshared=preshared,
        private_key_file=side.private_key_file,
        public_key=side.public_key,
        peer_private_key_file=peer_side.private_key_file,
        peer_public_key=peer_side.public_key,
    )


def _clients(schema: Schema) -> tuple[Clients, ...]:
    """The clients on each node they connect to (``clients.node`` or ``clients.nodes``)."""
    spec = schema.clients
    if spec is None:
        return ()
    own = _hosts(spec.subnet, 1)[0]
    taken = {peer.address for peer in spec.peers.values() if peer.address is not None}
    free = (ip for ip in spec.subnet.hosts() if ip != own and ip not in taken)
    peers = tuple(
        ClientPeer(
            name=name,
            address=peer.address if peer.address is not None else next(free),
            private_key_file=peer.private_key_file,
            public_key=peer.public_key,
        )
        for name, peer in spec.peers.items()
    )
    return tuple(
        Clients(
            node=name,
            interface=spec.interface,
            subnet=spec.subnet,
            address=_interface(own, spec.subnet),
            port=spec.port,
            endpoint=_dial(node.endpoint if node else None, spec.port),
            dns=tuple(spec.dns) or (own,),
            allowed_ips=tuple(spec.allowed_ips),
            keepalive=spec.keepalive,
            peers=peers,
        )
        for name in spec.entries
        for node in (schema.nodes.get(name),)
    )
