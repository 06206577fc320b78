"""One health round of an exit: TCP connects THROUGH its tunnel, and its handshake age.

Why the probe leaves by the exit's own tunnel even while its table is failed over or
blocked: the probe socket is bound to the exit's interface (SO_BINDTODEVICE) and carries
no fwmark, so no exit's ``fwmark`` rule matches it; ``main`` has no route out of a tunnel
interface (a route by another interface does not match a bound socket), so the IPv4
lookup fails, and for a socket bound to a device the kernel then sends the packet on-link
out of that device (``ip_route_output_key_hash_rcu``: "Apparently, routing tables are
wrong. Assume, that the destination is on link."). WireGuard routes it to its peer by
allowed-ips. The exit's table, whatever it holds, is never consulted: checked in the lab
(tests/health/test_probe.py) with the table blocked and failed over. IPv6 has no on-link
fallback: before a round with IPv6 targets, the interface gets a route of its own that
only sockets bound to it take (``iptserver.dataplane.probe6``).

The handshake comes from wireguard-go's UAPI socket (``/var/run/wireguard/IFACE.sock``,
``get=1``): wireguard-go has no generic netlink.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iptserver.dataplane.probe6 import ProbeRoutes6
from iptserver.errors import DataplaneError
from iptserver.schema.health import Health
from iptserver.schema.values import IPAddress

WIREGUARD_SOCKETS = Path("/var/run/wireguard")
UAPI_TIMEOUT = 1.0

SocketFactory = Callable[[int, int], socket.socket]


@dataclass(frozen=True, slots=True)
class RoundResult:
    """What one round found; ``ok`` when it counts as good."""

    ok: bool
    probe_error: str | None = None  # every probe failed: why (None: one answered, or none)
    handshake_age: float | None = None  # seconds; None: not checked or unknown
    handshake_problem: str | None = None  # why the handshake failed the round


def format_target(target: tuple[IPAddress, int]) -> str:
    address, port = target
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


async def connect_through(
    interface: str,
    target: tuple[IPAddress, int],
    timeout: float,
    make_socket: SocketFactory = socket.socket,
) -> str | None:
    """A TCP connect to ``target`` out of ``interface``: None when it was accepted, or
    why not ("timed out", "Connection refused", "No such device"...)."""
    address, port = target
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    sock = make_socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.setblocking(False)
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, (str(address), port)), timeout
        )
    except TimeoutError:
        return "timed out"
    except OSError as e:
        return e.strerror or errno.errorcode.get(e.errno or 0, str(e))
    finally:
        sock.close()
    return None


def latest_handshake_of(uapi: str) -> int:
    """The latest ``last_handshake_time_sec`` of any peer in a UAPI ``get`` reply
    (seconds since the epoch; 0: no handshake yet)."""
    latest = 0
    for line in uapi.splitlines():
        key, _, value = line.partition("=")
        if key == "last_handshake_time_sec" and value.isdigit():
            latest = max(latest, int(value))
    return latest


async def latest_handshake(interface: str, directory: Path = WIREGUARD_SOCKETS) -> int | None:
    """The interface's latest handshake (seconds since the epoch, 0: none yet), or None
    when it has no UAPI socket (not wireguard-go). OSError when the socket fails."""
    path = directory / f"{interface}.sock"
    if not path.exists():
        return None
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), UAPI_TIMEOUT)
    try:
        writer.write(b"get=1\n\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.readuntil(b"\n\n"), UAPI_TIMEOUT)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as e:
        raise OSError(f"bad reply from {path}: {e!r}") from e
    finally:
        writer.close()
    return latest_handshake_of(reply.decode(errors="replace"))


async def probe_round(
    interface: str,
    health: Health,
    make_socket: SocketFactory = socket.socket,
    wireguard_sockets: Path = WIREGUARD_SOCKETS,
    routes6: ProbeRoutes6 | None = None,
) -> RoundResult:
    """Probe every target at once (one answering is enough), then read the handshake
    (after the probes: their traffic triggers a handshake when one is due). ``routes6``:
    what gives IPv6 targets their way out of the interface."""
    targets = list(health.probe)
    errors: list[str | None] = []
    if routes6 is not None and any(address.version == 6 for address, _ in targets):
        try:
            await asyncio.to_thread(routes6.ensure, interface)
        except DataplaneError as e:
            errors += [str(e) for address, _ in targets if address.version == 6]
            targets = [t for t in targets if t[0].version == 4]
    errors += await asyncio.gather(
        *(connect_through(interface, t, health.timeout, make_socket) for t in targets)
    )
    probe_error = None
    if errors and all(e is not None for e in errors):
        probe_error = ", ".join(sorted({e for e in errors if e is not None}))
    age = None
    handshake_problem = None
    if health.handshake_max:
        try:
            latest = await latest_handshake(interface, wireguard_sockets)
        except OSError as e:
            handshake_problem = f"cannot read the WireGuard handshake: {e}"
        else:
            if latest == 0:
                handshake_problem = "no WireGuard handshake yet"
            elif latest is not None:
                age = max(0.0, time.time() - latest)
                if age > health.handshake_max:
                    handshake_problem = f"last handshake {age:.0f} s ago"
    ok = probe_error is None and handshake_problem is None
    return RoundResult(ok, probe_error, age, handshake_problem)
