"""RouterOS v7 scripts for a MikroTik node of the mesh: a deploy script and a cleanup script.

Everything the deploy script adds carries a comment starting with ``iptserver``; it
first removes whatever carries that tag, then adds it all again, so running it twice
leaves one copy (re-run it after every change of the schema). The cleanup script
removes the tagged objects, then runs the schema's ``mikrotik_cleanup`` commands.

OSPF matches ``iptserver render frr``: area 0, the tunnels point-to-point with hello 1 s
and dead 4 s, the node's subnets announced passively. Pure: same input, same bytes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import PurePosixPath

from iptserver.mesh.topology import Link, Mesh, Node
from iptserver.render.files import Rendered, Secret
from iptserver.render.frr import DEAD, HELLO
from iptserver.render.wireguard import (
    KeySource,
    RenderError,
    peer_public_key,
    preshared_key_location,
    private_key_location,
)

TAG = "iptserver"
INSTANCE = "iptserver"
AREA = "iptserver-backbone"
# Menus the scripts add to, in the order their objects are removed (users before what
# they use: peers before interfaces, templates before areas before the instance).
MENUS = (
    "/ip firewall nat",
    "/ip firewall mangle",
    "/ipv6 firewall nat",
    "/ipv6 firewall mangle",
    "/routing ospf interface-template",
    "/routing ospf area",
    "/routing ospf instance",
    "/ip address",
    "/ipv6 address",
    "/interface wireguard peers",
    "/interface wireguard",
)
DEPLOY = "deploy.rsc"
CLEANUP = "cleanup.rsc"


@dataclass(frozen=True)
class RouterOsRender:
    files: tuple[Rendered, ...]


def ros_string(text: str) -> str:
    """A RouterOS string literal: quotes, backslashes, ``$`` and ``?`` escaped."""
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("$", "\\$")
        .replace("?", "\\?")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _comment(what: str) -> str:
    return f"comment={ros_string(f'{TAG}: {what}')}"


def _split_endpoint(endpoint: str) -> tuple[str, str]:
    host, port = endpoint.rsplit(":", 1)
    return host.strip("[]"), port


def _remove_tagged() -> list[str]:
    return [f'{menu} remove [find where comment~"^{TAG}"]' for menu in MENUS]


def _wireguard(link: Link, keys: KeySource, secrets: list[Secret]) -> list[str]:
    lines = [f"# Tunnel {link.tunnel} to {link.peer_node} ({link.peer_interface})."]
    if link.public_key is not None:
        # The router keeps its own private key: the interface is not ours to remake.
        lines += [
            f"# The private key stays on the router; {link.peer_node} expects its public key",
            f"# {link.public_key}.",
            f":if ([:len [/interface wireguard find where name={ros_string(link.interface)}]]"
            " = 0) do={ :error "
            + ros_string(
                f"iptserver: create the WireGuard interface {link.interface} with the private "
                f"key whose public key is {link.public_key}"
            )
            + " }",
        ]
    else:
        private = keys.private(link.node, link.interface, link.private_key_file)
        secrets.append(
            Secret(
                private,
                private_key_location(keys, link.node, link.interface, link.private_key_file),
            )
        )
        port = f" listen-port={link.listen_port}" if link.listen_port is not None else ""
        lines.append(
            f"/interface wireguard add name={ros_string(link.interface)}{port} "
            f"private-key={ros_string(private)} {_comment(link.tunnel)}"
        )
    peer = [
        f"/interface wireguard peers add interface={ros_string(link.interface)}",
        f"public-key={ros_string(peer_public_key(link, keys))}",
    ]
    if link.peer_endpoint is not None:
        host, port = _split_endpoint(link.peer_endpoint)
        peer += [f"endpoint-address={host}", f"endpoint-port={port}"]
    peer.append(f"allowed-address={','.join(str(net) for net in link.allowed_nets)}")
    if link.keepalive is not None:
        peer.append(f"persistent-keepalive={link.keepalive}s")
    if link.preshared:
        psk = keys.preshared(link.tunnel)
        secrets.append(Secret(psk, preshared_key_location(keys, link.tunnel)))
        peer.append(f"preshared-key={ros_string(psk)}")
    peer.append(_comment(f"{link.tunnel} peer {link.peer_node}"))
    lines.append(" ".join(peer))
    for address in link.addresses:
        menu = "/ip address" if address.version == 4 else "/ipv6 address"
        extra = "" if address.version == 4 else " advertise=no"
        lines.append(
            f"{menu} add address={address} interface={ros_string(link.interface)}{extra} "
            f"{_comment(link.tunnel)}"
        )
    if link.masquerade:
        lines += _masquerade(link)
    return lines


def _masquerade(link: Link) -> list[str]:
    """NAT what comes in over the tunnel and leaves by another interface (as on Linux:
    the connection is marked on the way in, masqueraded on the way out)."""
    mark = ros_string(f"{TAG}-{link.interface}")
    iface = ros_string(link.interface)
    lines = []
    for family in ("/ip", "/ipv6"):
        lines += [
            f"{family} firewall mangle add chain=prerouting in-interface={iface} "
            f"connection-state=new action=mark-connection new-connection-mark={mark} "
            f"passthrough=yes {_comment(f'{link.tunnel} masquerade')}",
            f"{family} firewall nat add chain=srcnat connection-mark={mark} "
            f"out-interface=!{link.interface} action=masquerade "
            f"{_comment(f'{link.tunnel} masquerade')}",
        ]
    return lines


def _ospf(mesh: Mesh, node: Node) -> list[str]:
    instance = f"/routing ospf instance add name={INSTANCE} version=2"
    if node.router_id is not None:
        instance += f" router-id={node.router_id}"
    lines = [
        "# OSPF as `iptserver render frr` runs it on the other nodes.",
        f"{instance} {_comment('mesh OSPF')}",
        f"/routing ospf area add name={AREA} area-id=0.0.0.0 instance={INSTANCE} "
        f"{_comment('mesh OSPF')}",
    ]
    for link in node.links:
        if link.address.version != 4:
            continue
        cost = f" cost={link.ospf_cost}" if link.ospf_cost is not None else ""
        lines.append(
            f"/routing ospf interface-template add area={AREA} "
            f"interfaces={ros_string(link.interface)} type=ptp hello-interval={HELLO}s "
            f"dead-interval={DEAD}s{cost} {_comment(f'{link.tunnel} OSPF')}"
        )
    subnets = [net for net in node.subnets if isinstance(net, ipaddress.IPv4Network)]
    if subnets:
        lines.append(
            f"/routing ospf interface-template add area={AREA} "
            f"networks={','.join(str(net) for net in subnets)} passive "
            f"{_comment('subnets')}"
        )
    return lines


def _hooks(link: Link, kind: str, commands: tuple[str, ...]) -> list[str]:
    lines = []
    for number, command in enumerate(commands, start=1):
        what = f"{TAG}: {link.tunnel} mikrotik_{kind} {number}/{len(commands)}"
        command = command.strip()
        lines.append(f":log info {ros_string(f'{what}: {command}')}")
        if kind == "cleanup":  # clean up as much as can be, whatever is already gone
            failed = ros_string(f"{what} failed: {command}")
            lines.append(f":do {{ {command} }} on-error={{ :log warning {failed} }}")
        else:
            lines.append(command)
    return lines


def deploy_script(mesh: Mesh, node: Node, keys: KeySource) -> Rendered:
    secrets: list[Secret] = []
    lines = [
        f"# {node.name}: the mesh on RouterOS v7. Rendered by `iptserver render routeros`;",
        "# edit the schema, not this file. Run it with /import; running it again replaces",
        f'# what it added before (everything with a comment starting "{TAG}").',
        *_remove_tagged(),
    ]
    for link in node.links:
        lines += _wireguard(link, keys, secrets)
    if node.ospf:
        lines += _ospf(mesh, node)
    for link in node.links:
        if link.mikrotik_deploy:
            lines.append(f"# mikrotik_deploy of {link.tunnel}, from the schema.")
            lines += _hooks(link, "deploy", link.mikrotik_deploy)
    lines.append(f":log info {ros_string(f'{TAG}: {node.name} deployed')}")
    text = "\n".join(lines) + "\n"
    return Rendered(PurePosixPath(node.name, DEPLOY), text, tuple(secrets))


def cleanup_script(node: Node) -> Rendered:
    lines = [
        f"# {node.name}: removes what the deploy script added, then runs mikrotik_cleanup.",
        "# Rendered by `iptserver render routeros`; run it with /import.",
        *_remove_tagged(),
    ]
    for link in node.links:
        if link.mikrotik_cleanup:
            lines.append(f"# mikrotik_cleanup of {link.tunnel}, from the schema.")
            lines += _hooks(link, "cleanup", link.mikrotik_cleanup)
    lines.append(f":log info {ros_string(f'{TAG}: {node.name} cleaned up')}")
    return Rendered(PurePosixPath(node.name, CLEANUP), "\n".join(lines) + "\n")


def render_routeros(mesh: Mesh, keys: KeySource, node: str) -> RouterOsRender:
    try:
        chosen = mesh.node(node)
    except KeyError as e:
        raise RenderError(str(e.args[0])) from None
    if not chosen.mikrotik:
        raise RenderError(
            f"node {node!r} is not a RouterOS peer (set nodes.{node}.mikrotik: true); "
            f"for a Linux node use `iptserver render wireguard --node {node}`"
        )
    if not chosen.links:
        raise RenderError(f"node {node!r} has no tunnels to render")
    return RouterOsRender((deploy_script(mesh, chosen, keys), cleanup_script(chosen)))
