"""The peers of a running WireGuard interface (kernel or wireguard-go), through the
``wg`` tool: one peer added or removed leaves the others' sessions alone."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from iptserver.errors import DataplaneError
from iptserver.schema.values import IPNetwork

TIMEOUT = 10.0  # seconds for one ``wg`` call


@dataclass(frozen=True)
class PeerStatus:
    public_key: str
    endpoint: str | None  # where its last packet came from
    latest_handshake: int | None  # Unix time
    rx_bytes: int
    tx_bytes: int


def set_peer(interface: str, public_key: str, allowed: Sequence[IPNetwork]) -> None:
    """Add the peer (or set its allowed IPs)."""
    nets = ",".join(str(net) for net in allowed)
    _wg(interface, ["set", interface, "peer", public_key, "allowed-ips", nets])


def remove_peer(interface: str, public_key: str) -> None:
    _wg(interface, ["set", interface, "peer", public_key, "remove"])


def interface_key(interface: str) -> str:
    """The interface's own public key (what its peers' configs name)."""
    return _wg(interface, ["show", interface, "public-key"]).strip()


def peers(interface: str) -> dict[str, PeerStatus]:
    """Public key -> what the interface knows of that peer now."""
    lines = _wg(interface, ["show", interface, "dump"]).splitlines()[1:]  # [0]: the interface
    found = {}
    for line in lines:
        fields = line.split("\t")
        if len(fields) < 8:
            continue
        key, _, endpoint, _, handshake, rx, tx = fields[:7]
        found[key] = PeerStatus(
            public_key=key,
            endpoint=None if endpoint == "(none)" else endpoint,
            latest_handshake=int(handshake) or None,
            rx_bytes=int(rx),
            tx_bytes=int(tx),
        )
    return found


def _wg(interface: str, argv: list[str]) -> str:
    try:
        done = subprocess.run(
            ["wg", *argv], capture_output=True, text=True, check=True, timeout=TIMEOUT
        )
    except FileNotFoundError as e:
        raise DataplaneError("wg is not installed (apt-get install wireguard-tools)") from e
    except subprocess.CalledProcessError as e:
        why = e.stderr.strip() or f"exit status {e.returncode}"
        raise DataplaneError(f"WireGuard interface {interface}: wg {argv[0]}: {why}") from e
    except (OSError, subprocess.SubprocessError) as e:
        raise DataplaneError(f"WireGuard interface {interface}: wg {argv[0]}: {e}") from e
    return done.stdout
