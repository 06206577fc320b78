"""A systemd unit for ``iptserver run`` on a plain host.

The daemon keeps root's uid (iptables' lock file and the kernel objects it owns are
root's) but only the capabilities it uses: CAP_NET_ADMIN (ipsets, iptables, routes and
rules, rp_filter), CAP_NET_RAW (iptables' raw socket, the health probes) and
CAP_NET_BIND_SERVICE (port 53); the bounding set drops every other, so neither the daemon
nor anything it runs can get them back. Pure: text out, the CLI decides where it goes.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

CAPABILITIES = ("CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW")
UNIT_NAME = "iptserver.service"
VAR_LIB = Path("/var/lib")


@dataclass(frozen=True)
class UnitSettings:
    command: tuple[str, ...]  # how to start iptserver: the script, or python -m iptserver
    config: Path
    state_dir: Path
    geoip: Path | None = None


def render_unit(settings: UnitSettings) -> str:
    run = [*settings.command, "run", "--config", str(settings.config)]
    run += ["--state-dir", str(settings.state_dir)]
    if settings.geoip is not None:
        run += ["--geoip", str(settings.geoip)]
    capabilities = " ".join(CAPABILITIES)
    state = settings.state_dir
    # Under /var/lib systemd makes the state directory (0700) before the start.
    made = (
        f"StateDirectory={state.name}\nStateDirectoryMode=0700\n" if state.parent == VAR_LIB else ""
    )
    return f"""\
[Unit]
Description=iptserver: DNS-driven policy routing over WireGuard exits
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={shlex.join(run)}
# systemctl reload: the schema is read again (a bad one is logged, the running one kept).
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
TimeoutStopSec=20
# Root's uid, but only the network capabilities: nothing else can be gained back.
CapabilityBoundingSet={capabilities}
AmbientCapabilities={capabilities}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
{made}ReadWritePaths={shlex.quote(str(state))} /run

[Install]
WantedBy=multi-user.target
"""
