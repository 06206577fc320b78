"""A standalone compose stack for an exit or office node: its tunnels, its kill-switch,
and FRR when the node runs OSPF.

Where the entry's tunnels run beside a service the user already has (the override of
:mod:`iptserver.render.compose`), an exit or an office node can run its whole part of the
mesh in compose: ``iptserver render compose --stack NODE --out DIR`` writes
``DIR/NODE/docker-compose.yml`` with

* ``iptserver-net``: the network namespace the stack lives in. It holds the uplink (the
  project's default network, or what the operator adds), publishes the UDP ports of the
  node's listening tunnel ends, turns forwarding on (``sysctls``), and installs the
  kill-switch before anything else runs in the namespace. It runs nothing else, so it is
  never restarted by a fault of a tunnel or of FRR;
* ``iptserver-tunnel-IFACE``: one per tunnel end of the node, as in the override (keys
  from mounted files, the handshake health check), in ``iptserver-net``'s namespace; the
  tunnel's masquerade (an exit's ``masquerade: true``) is its wg-quick hooks';
* ``iptserver-frr``: zebra and ospfd on ``frr/frr.conf`` and ``frr/daemons`` (the files of
  ``iptserver render frr``), when the node runs OSPF.

The kill-switch. What a node must never do is send out of its uplink, in the clear,
traffic that was meant for a tunnel. An exit forwards what arrives from the tunnel to its
uplink (masqueraded): when the tunnel is down nothing arrives, so nothing can leak; an
office sends its LANs' traffic into the tunnel, and when the tunnel's interface is gone,
the routes through it go with it and the kernel would fall back to the uplink's default
route (``send: all``'s own rules fall through to ``main`` too). So the namespace forwards
only what comes in from one of the node's tunnels or goes out into one, and drops every
other forwarded packet: the chain ``IPTSERVER-KILLSWITCH`` in ``FORWARD`` (IPv4 and IPv6),
matching the tunnels by interface name, so the rules hold while an interface is absent.
It belongs to the namespace, not to a tunnel container: it is there before the first
tunnel comes up and stays while one is restarted. An established connection gets no
exception (the usual hole: a connection made through the tunnel would carry on through
the uplink). The price: the stack's namespace is a gateway into the mesh, not the LAN's
router to the internet.

Pure: the mesh, a key source and the node's FRR files in, files out; same input, same
bytes. Paths in the compose file are relative to its directory, except the keys, which
stay where the state directory keeps them (mounted read-only, never copied).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import yaml

from iptserver.mesh.topology import Mesh, Node
from iptserver.render.compose import (
    HEALTH,
    RESTART,
    ComposeError,
    TunnelEnd,
    frr_service,
    tunnel_end,
    tunnel_service,
)
from iptserver.render.files import Rendered
from iptserver.render.wireguard import KeySource
from iptserver.schema.source import format_path

NAMESPACE = "iptserver-net"
FRR = "iptserver-frr"
COMPOSE_FILE = "docker-compose.yml"
WIREGUARD_DIR = "wireguard"
FRR_DIR = "frr"
KILLSWITCH_CHAIN = "IPTSERVER-KILLSWITCH"  # the entry script installs it (kill-switch)


def render_stack(
    mesh: Mesh, node: str, keys: KeySource, image: str, frr: tuple[Rendered, ...] = ()
) -> tuple[Rendered, ...]:
    """``NODE/docker-compose.yml``, ``NODE/wireguard/IFACE.conf`` (no keys in it) and
    ``NODE/frr/*`` (``frr``: the node's files from ``render_frr``, needed when it runs
    OSPF)."""
    own = stack_node(mesh, node)
    if own.ospf and not frr:
        raise ComposeError(f"{format_path(('nodes', node, 'ospf'))}: no FRR files were given")
    ends = tuple(tunnel_end(mesh, link, keys) for link in own.links)
    services: dict[str, Any] = {NAMESPACE: _namespace(ends, image)}
    for end in ends:
        services[end.service] = tunnel_service(end, image, NAMESPACE, f"./{WIREGUARD_DIR}")
    if own.ospf:
        services[FRR] = {
            "image": image,
            "network_mode": f"service:{NAMESPACE}",
            "restart": RESTART,
            **frr_service(NAMESPACE, f"./{FRR_DIR}"),
        }
    header = (
        f"# {node}: its tunnels, kill-switch{' and FRR' if own.ospf else ''}.\n"
        f"# Rendered by `iptserver render compose --stack {node}`; edit the schema, not "
        "this file.\n# Start it from this directory: docker compose up -d\n"
    )
    body = yaml.safe_dump(
        {"version": "2.4", "services": services},
        sort_keys=True,
        default_flow_style=False,
        width=1000,
    )
    files = [Rendered(PurePosixPath(node, COMPOSE_FILE), header + body)]
    files += [
        Rendered(PurePosixPath(node, WIREGUARD_DIR, end.config.path.name), end.config.text)
        for end in ends
    ]
    if own.ospf:
        files += [Rendered(PurePosixPath(node, FRR_DIR, f.path.name), f.text) for f in frr]
    return tuple(files)


def stack_node(mesh: Mesh, node: str) -> Node:
    """The node, if a standalone stack can run it."""
    try:
        own = mesh.node(node)
    except KeyError as e:
        raise ComposeError(str(e.args[0])) from None
    if own.entry:
        raise ComposeError(
            f"{format_path(('nodes', node, 'entry'))}: the entry runs beside its host service: "
            "iptserver render compose --compose-file FILE --service NAME"
        )
    if own.mikrotik:
        raise ComposeError(
            f"{format_path(('nodes', node, 'mikrotik'))}: a RouterOS peer runs no containers "
            f"(iptserver render routeros --node {node})"
        )
    if not own.links:
        raise ComposeError(f"{format_path(('nodes', node))}: no tunnel ends to run")
    return own


def _namespace(ends: tuple[TunnelEnd, ...], image: str) -> dict[str, Any]:
    """The namespace's owner: uplink, published ports, forwarding, the kill-switch."""
    families = {address.version for end in ends for address in end.link.addresses}
    families |= {net.version for end in ends for net in end.link.allowed_nets}
    sysctls = {"net.ipv4.ip_forward": 1}
    if 6 in families:
        sysctls["net.ipv6.conf.all.forwarding"] = 1
    ports = sorted(end.link.listen_port for end in ends if end.link.listen_port is not None)
    service: dict[str, Any] = {
        "image": image,
        "restart": RESTART,
        "command": ["iptserver-sidecar", "namespace", *(end.link.interface for end in ends)],
        "cap_add": ["NET_ADMIN"],
        "sysctls": sysctls,
        "healthcheck": {"test": ["CMD", "iptserver-sidecar", "health", "namespace"], **HEALTH},
    }
    if ports:
        service["ports"] = [f"{port}:{port}/udp" for port in ports]
    return service
