"""A docker compose override that runs iptserver beside an existing service.

MRVPN2's "compose patching": the entrypoint's WireGuard already lives in a compose
service (Firezone in MRVPN2). Rather than rewrite that stack, we write a second file that
``docker compose -f theirs.yml -f ours.yml`` merges in. It adds three sidecars that join
the service's network namespace (``network_mode: service:NAME``), so they see its
interfaces, its routes and its clients:

* ``iptserver``: the daemon, its DNS proxy on loopback and its API on 127.0.0.1:8053;
* ``iptserver-recursor``: PowerDNS Recursor with the iptserver plugin, answering the
  clients on port 53 (the daemon installs no redirect when its proxy is on loopback);
* ``iptserver-frr``: zebra and ospfd with the FRR configuration mounted from the host.

Each tunnel end the schema places in a service of the file (``compose_service``) gets a
container of its own in that service's namespace, ``iptserver-tunnel-IFACE``: wireguard-go
brought up by wg-quick on a config from which the keys are left out. As in MRVPN2, the
tunnel listens on the service's address, so the override publishes its UDP port there.

Tunnel containers (also used by :mod:`iptserver.render.compose_stack`):

* The image is the sidecar image, with a ``tunnel`` role in its entry script: it already
  holds wireguard-go, wireguard-tools, iptables and iproute2 (the daemon needs them), so a
  second image would only add a second build and a second thing to pull and update.
* Keys are never in the compose file, the environment or the config: the config says
  ``PostUp = wg set %i private-key /etc/wireguard/keys/private.key`` (and the same for a
  preshared key), and the override mounts that one file read-only from where
  ``iptserver render wireguard --state-dir`` keeps it (``STATE/keys/NODE/IFACE.key``, or
  the schema's ``private_key_file``). Rendering makes a missing key, as that command does.
* Health: ``wg show IFACE dump``. While a side that only listens has never heard from its
  peer (no endpoint known yet), it is healthy: it is waiting, and nothing in it is wrong.
  Once a peer is known, when either side sends keepalives, the latest handshake must be
  younger than 180 s (WireGuard renews a session every 120 s while packets flow, and drops
  it at 180 s); a tunnel nobody keeps alive is checked for its interface only.
* The namespace-restart behaviour is the sidecars': when the host service comes back in a
  new namespace, the tunnel container exits and its restart policy joins the new one.

``render_override`` is pure (a parsed compose file, settings and tunnel ends in, YAML
text out; same input, same bytes). ``read_compose`` is the one place that reads the
user's file; it is never written.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from iptserver.errors import IptserverError
from iptserver.mesh.topology import Link, Mesh
from iptserver.render.files import Rendered
from iptserver.render.wireguard import KeySource, peer_public_key, tunnel_config
from iptserver.schema.source import format_path
from iptserver.schema.values import Endpoint, format_endpoint

DEFAULT_IMAGE = "iptserver:latest"
SCHEMA_PATH = "/etc/iptserver/schema.yaml"
STATE_PATH = "/var/lib/iptserver"
GEOIP_PATH = "/etc/iptserver/country.mmdb"
FRR_PATH = "/etc/frr"
API = "127.0.0.1:8053"  # the daemon's HTTP API, where the recursor plugin posts answers
PROXY = "127.0.0.1:5353"  # the daemon's own DNS proxy: loopback, so no port 53 redirect
SIDECARS = ("iptserver", "iptserver-recursor", "iptserver-frr")
HEALTH = {"interval": "10s", "timeout": "5s", "retries": 3, "start_period": "20s"}
RESTART = "unless-stopped"
DNS_LISTEN = Endpoint(ipaddress.IPv4Address("0.0.0.0"), 53)  # the recursor, for the clients
WIREGUARD_PATH = "/etc/wireguard"  # a tunnel container's config, IFACE.conf
KEY_PATH = "/etc/wireguard/keys/private.key"  # its private key, mounted read-only
PSK_PATH = "/etc/wireguard/keys/preshared.psk"  # its preshared key, if the tunnel has one
HANDSHAKE_MAX_AGE = 180
"""Seconds: WireGuard's REJECT_AFTER_TIME. A session kept alive is renewed every 120 s
(REKEY_AFTER_TIME); a latest handshake older than this means there is no usable one."""
TUNNEL_PREFIX = "iptserver-tunnel-"  # + the interface: a tunnel container's service


class ComposeError(IptserverError):
    """The user's compose file cannot be read or does not have what we need."""


@dataclass(frozen=True)
class TunnelEnd:
    """One tunnel end run by a container: its config (keys left out, ``IFACE.conf``) and
    where its key files are on the host."""

    link: Link
    config: Rendered
    key_file: str
    psk_file: str | None
    max_age: int  # seconds the latest handshake may be old; 0: not checked

    @property
    def service(self) -> str:
        return f"{TUNNEL_PREFIX}{self.link.interface}"


def field_path(link: Link, name: str) -> str:
    """Where a tunnel end's field is in the schema, as errors name it."""
    return format_path(("tunnels", link.tunnel, "hosts", link.node, name))


def tunnel_end(mesh: Mesh, link: Link, keys: KeySource) -> TunnelEnd:
    """The container's view of one tunnel end (its private key made if missing)."""
    if link.public_key is not None and link.private_key_file is None:
        raise ComposeError(
            f"{field_path(link, 'public_key')}: the private key of {link.node}'s end of "
            f"{link.tunnel} is kept elsewhere; a tunnel container needs it (private_key_file)"
        )
    if link.table in (None, "auto") and any(net.prefixlen == 0 for net in link.allowed_nets):
        raise ComposeError(
            f"{field_path(link, 'allowed_nets')}: with wg-quick's Table = auto a default route "
            "in AllowedIPs would take over the namespace's default route, which a container "
            "may not do; give the networks behind the peer, or table: off (OSPF routes it)"
        )
    rendered = tunnel_config(link, keys)
    key, *psk = rendered.secrets
    lines = []
    for line in rendered.text.splitlines():
        if line.startswith("# Rendered by"):
            line = "# Rendered by `iptserver render compose`: keys are read from mounted files."
        elif line.startswith("PrivateKey = "):
            line = f"PostUp = wg set %i private-key {KEY_PATH}"
            if psk:
                peer = peer_public_key(link, keys)
                line += f"\nPostUp = wg set %i peer {peer} preshared-key {PSK_PATH}"
        elif line.startswith("PresharedKey = "):
            continue
        lines.append(line)
    far = mesh.nodes.get(link.peer_node)
    ends = [link, *(end for end in (far.links if far else ()) if end.tunnel == link.tunnel)]
    kept_alive = any(end.keepalive is not None for end in ends)
    return TunnelEnd(
        link=link,
        config=Rendered(rendered.path, "\n".join(lines) + "\n"),
        key_file=key.where,
        psk_file=psk[0].where if psk else None,
        max_age=HANDSHAKE_MAX_AGE if kept_alive else 0,
    )


def tunnel_service(end: TunnelEnd, image: str, namespace: str, config_dir: str) -> dict[str, Any]:
    """The service that runs ``end`` in ``namespace``'s network namespace; its config is
    ``config_dir/IFACE.conf`` on the host."""
    iface = end.link.interface
    volumes = [
        f"{config_dir}/{iface}.conf:{WIREGUARD_PATH}/{iface}.conf:ro",
        f"{end.key_file}:{KEY_PATH}:ro",
    ]
    if end.psk_file is not None:
        volumes.append(f"{end.psk_file}:{PSK_PATH}:ro")
    health = ["CMD", "iptserver-sidecar", "health", "tunnel", iface, str(end.max_age)]
    return {
        "image": image,
        "network_mode": f"service:{namespace}",
        "restart": RESTART,
        "command": ["iptserver-sidecar", "tunnel", iface],
        "cap_add": ["NET_ADMIN"],
        "devices": ["/dev/net/tun:/dev/net/tun"],
        "volumes": volumes,
        "depends_on": [namespace],
        "healthcheck": {"test": health, **HEALTH},
    }


def compose_tunnels(mesh: Mesh, node: str, keys: KeySource) -> tuple[TunnelEnd, ...]:
    """The tunnel ends of ``node`` the schema places in a compose service, in schema order."""
    return tuple(
        tunnel_end(mesh, link, keys)
        for link in mesh.node(node).links
        if link.compose_service is not None
    )


@dataclass(frozen=True)
class ComposeSettings:
    """Where the sidecars find their files and how the recursor answers."""

    service: str  # the service whose network namespace the sidecars join
    schema: Path  # the routing schema on the host (mounted read-only)
    state_dir: Path  # iptserver's --state-dir on the host
    frr_dir: Path  # FRR's configuration directory on the host (frr.conf)
    image: str = DEFAULT_IMAGE
    wireguard_dir: Path = Path("wireguard")  # the tunnel containers' configs on the host
    geoip: Path | None = None  # a country database on the host, if any
    dns_listen: Endpoint = DNS_LISTEN
    forward: tuple[Endpoint, ...] = ()  # recursors to forward to (default: recurse)
    allow_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default_factory=tuple
    )
    entry: str | None = None  # with several entries: the one this is (iptserver run --node)


def read_compose(path: Path) -> dict[str, Any]:
    """The user's compose file, parsed; errors name the file and, where known, the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ComposeError(f"{path}: cannot read the compose file: {e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ComposeError(f"{where}: not valid YAML: {e.problem or e}") from e
    except yaml.YAMLError as e:
        raise ComposeError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ComposeError(f"{path}: a compose file is a mapping with a `services` key")
    return data


def user_services(user: Mapping[str, Any], service: str, source: str) -> dict[str, Any]:
    """The services of the user's file, which must have ``service``."""
    services = user.get("services")
    if not isinstance(services, dict) or not services:
        raise ComposeError(f"{source}: services: no services in the compose file")
    if service not in services:
        known = ", ".join(sorted(str(name) for name in services))
        raise ComposeError(f"{source}: services: no service {service!r} (the file has: {known})")
    return services


def render_override(
    user: Mapping[str, Any],
    settings: ComposeSettings,
    source: str,
    tunnels: tuple[TunnelEnd, ...] = (),
) -> str:
    """The override file's text, for the user's parsed compose file (named ``source``),
    with a container for each of ``tunnels`` (``compose_tunnels``) in its service."""
    services = user_services(user, settings.service, source)
    known = ", ".join(sorted(str(name) for name in services))
    ours = (*SIDECARS, *(end.service for end in tunnels))
    taken = sorted(name for name in ours if name in services)
    if taken:
        raise ComposeError(
            f"{source}: services: {', '.join(taken)} already defined; the sidecars use these names"
        )
    for end in tunnels:
        if end.link.compose_service not in services:
            raise ComposeError(
                f"{settings.schema}: {field_path(end.link, 'compose_service')}: no service "
                f"{end.link.compose_service!r} in {source} (the file has: {known})"
            )
    added = _sidecars(settings)
    for end in tunnels:
        host = str(end.link.compose_service)
        added[end.service] = tunnel_service(end, settings.image, host, str(settings.wireguard_dir))
        if end.link.listen_port is not None:  # merged into the user's service by compose
            ports = added.setdefault(host, {"ports": []})["ports"]
            ports.append(f"{end.link.listen_port}:{end.link.listen_port}/udp")
    for host in {str(end.link.compose_service) for end in tunnels} & set(added):
        added[host]["ports"].sort(key=lambda port: int(port.split(":")[0]))
    override: dict[str, Any] = {"services": added}
    if "version" in user:  # compose v1 refuses files of different versions
        override["version"] = str(user["version"])
    header = (
        f"# Rendered by `iptserver render compose` for service {settings.service!r} of "
        f"{source}.\n# Use it beside that file: docker compose -f {source} -f THIS up -d\n"
    )
    body = yaml.safe_dump(override, sort_keys=True, default_flow_style=False, width=1000)
    return header + body


def _sidecars(settings: ComposeSettings) -> dict[str, Any]:
    """The three sidecars, each in the service's network namespace."""
    common = {
        "image": settings.image,
        "network_mode": f"service:{settings.service}",
        "restart": RESTART,
    }
    return {
        "iptserver": {**common, **_daemon(settings)},
        "iptserver-recursor": {**common, **_recursor(settings)},
        "iptserver-frr": {**common, **frr_service(settings.service, str(settings.frr_dir))},
    }


def _health(sidecar: str) -> dict[str, Any]:
    return {"test": ["CMD", "iptserver-sidecar", "health", sidecar], **HEALTH}


def _daemon(settings: ComposeSettings) -> dict[str, Any]:
    """iptserver run: its DNS proxy on loopback, forwarding to the recursor beside it."""
    command = [
        "iptserver-sidecar",  # iptserver beside the namespace watchdog
        "iptserver",
        "--log-level",
        "info",
        "run",
        "--config",
        SCHEMA_PATH,
        "--state-dir",
        STATE_PATH,
        "--api",
        API,
        "--listen",
        PROXY,
        "--upstream",
        format_endpoint(_reachable(settings.dns_listen)),
    ]
    volumes = [f"{settings.schema}:{SCHEMA_PATH}:ro", f"{settings.state_dir}:{STATE_PATH}"]
    if settings.entry is not None:
        command += ["--node", settings.entry]
    if settings.geoip is not None:
        command += ["--geoip", GEOIP_PATH]
        volumes.append(f"{settings.geoip}:{GEOIP_PATH}:ro")
    return {
        "command": command,
        "cap_add": ["NET_ADMIN", "NET_RAW"],
        "devices": ["/dev/net/tun:/dev/net/tun"],
        "volumes": volumes,
        "environment": {"IPTSERVER_API": API},
        "depends_on": [settings.service],
        "healthcheck": _health("iptserver"),
    }


def _recursor(settings: ComposeSettings) -> dict[str, Any]:
    """PowerDNS Recursor with the plugin, answering the clients."""
    environment = {
        "IPTSERVER_API": API,
        "RECURSOR_LISTEN": format_endpoint(settings.dns_listen),
        "RECURSOR_FORWARD": ";".join(format_endpoint(e) for e in settings.forward),
        "RECURSOR_ALLOW_FROM": ", ".join(str(n) for n in settings.allow_from),
    }
    return {
        "command": ["iptserver-sidecar", "recursor"],
        "environment": environment,
        "depends_on": [settings.service, "iptserver"],
        "healthcheck": _health("recursor"),
    }


def frr_service(namespace: str, frr_dir: str) -> dict[str, Any]:
    """zebra and ospfd, configured from the host's FRR directory (frr.conf, daemons)."""
    return {
        "command": ["iptserver-sidecar", "frr"],
        "cap_add": ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"],
        "devices": ["/dev/net/tun:/dev/net/tun"],
        "volumes": [f"{frr_dir}:{FRR_PATH}"],
        "depends_on": [namespace],
        "healthcheck": _health("frr"),
    }


def _reachable(listen: Endpoint) -> Endpoint:
    """Where a process in the namespace reaches a server listening on ``listen``."""
    address, port = listen
    if address.is_unspecified:
        loopback = "127.0.0.1" if address.version == 4 else "::1"
        return Endpoint(ipaddress.ip_address(loopback), port)
    return listen
