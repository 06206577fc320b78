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

As in MRVPN2, the tunnel ends the schema places in the service (``compose_service``) listen
on the service's address, so the override also publishes their UDP ports on that service.

``render_override`` is pure (a parsed compose file and settings in, YAML text out; same
input, same bytes). ``read_compose`` is the one place that reads the user's file; it is
never written.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from iptserver.errors import IptserverError
from iptserver.mesh.topology import Mesh
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


class ComposeError(IptserverError):
    """The user's compose file cannot be read or does not have what we need."""


@dataclass(frozen=True)
class ComposeSettings:
    """Where the sidecars find their files and how the recursor answers."""

    service: str  # the service whose network namespace the sidecars join
    schema: Path  # the routing schema on the host (mounted read-only)
    state_dir: Path  # iptserver's --state-dir on the host
    frr_dir: Path  # FRR's configuration directory on the host (frr.conf)
    image: str = DEFAULT_IMAGE
    geoip: Path | None = None  # a country database on the host, if any
    dns_listen: Endpoint = DNS_LISTEN
    forward: tuple[Endpoint, ...] = ()  # recursors to forward to (default: recurse)
    allow_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default_factory=tuple
    )


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


def exposed_ports(mesh: Mesh, service: str) -> tuple[int, ...]:
    """The UDP ports of the tunnel ends that run in ``service``, sorted."""
    return tuple(
        sorted(
            {
                link.listen_port
                for node in mesh.nodes.values()
                for link in node.links
                if link.compose_service == service and link.listen_port is not None
            }
        )
    )


def render_override(
    user: Mapping[str, Any], settings: ComposeSettings, source: str, ports: tuple[int, ...] = ()
) -> str:
    """The override file's text, for the user's parsed compose file (named ``source``);
    ``ports`` are the UDP ports to publish on the service (``exposed_ports``)."""
    services = user.get("services")
    if not isinstance(services, dict) or not services:
        raise ComposeError(f"{source}: services: no services in the compose file")
    if settings.service not in services:
        known = ", ".join(sorted(str(name) for name in services))
        raise ComposeError(
            f"{source}: services: no service {settings.service!r} (the file has: {known})"
        )
    taken = sorted(name for name in SIDECARS if name in services)
    if taken:
        raise ComposeError(
            f"{source}: services: {', '.join(taken)} already defined; the sidecars use these names"
        )
    override: dict[str, Any] = {"services": _sidecars(settings)}
    if ports:  # merged into the user's service by compose (its own ports are kept)
        override["services"][settings.service] = {"ports": [f"{p}:{p}/udp" for p in ports]}
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
        "iptserver-frr": {**common, **_frr(settings)},
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


def _frr(settings: ComposeSettings) -> dict[str, Any]:
    """zebra and ospfd, configured from the host's FRR directory."""
    return {
        "command": ["iptserver-sidecar", "frr"],
        "cap_add": ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"],
        "devices": ["/dev/net/tun:/dev/net/tun"],
        "volumes": [f"{settings.frr_dir}:{FRR_PATH}"],
        "depends_on": [settings.service],
        "healthcheck": _health("frr"),
    }


def _reachable(listen: Endpoint) -> Endpoint:
    """Where a process in the namespace reaches a server listening on ``listen``."""
    address, port = listen
    if address.is_unspecified:
        loopback = "127.0.0.1" if address.version == 4 else "::1"
        return Endpoint(ipaddress.ip_address(loopback), port)
    return listen
