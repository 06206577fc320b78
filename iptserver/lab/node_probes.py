"""Probes from a lab node: sockets, whoami (which way did it leave?) and DNS queries.

``probes`` does the talking given a socket factory; this binds it to a node's namespace
and turns a failed probe into a ``LabError`` that says where the kernel would route.
``Lab`` offers these as its own methods (``lab.whoami("client", address)``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from iptserver.lab import probes
from iptserver.lab.addresses import SEEN_AS
from iptserver.lab.commands import run_command
from iptserver.lab.errors import LabError, ProbeError
from iptserver.lab.netns import socket_in

if TYPE_CHECKING:
    from iptserver.lab.topology import Lab


class NodeProbes:
    """The probes of one lab (composition: it needs only the lab's namespace names)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def socket(
        self, node: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
    ) -> socket.socket:
        """A socket created inside a node's namespace (usable from any thread)."""
        self.lab.check_running()
        return socket_in(self.lab.ns(node), family, kind)

    def _factory(self, node: str) -> probes.SocketFactory:
        ns = self.lab.ns(node)
        return lambda family, kind: socket_in(ns, family, kind)

    @contextlib.contextmanager
    def _explained(self, node: str, address: str) -> Iterator[None]:
        """A ProbeError becomes a LabError with the node's route to ``address``."""
        self.lab.check_running()
        try:
            yield
        except ProbeError as exc:
            argv = ["ip", "-n", self.lab.ns(node), "route", "get", address]
            done = run_command(argv, "", check=False)
            hint = (done.stdout or done.stderr).strip()
            raise LabError(
                f"from {node} ({self.lab.ns(node)}): {exc}\n  ip route get: {hint}"
            ) from exc

    def seen(
        self, node: str, address: str, port: int = 80, *, timeout: float = 3.0
    ) -> dict[str, Any]:
        """What the whoami server at ``address`` reports: ``{"seen": ..., "local": ...}``."""
        with self._explained(node, address):
            return probes.whoami(self._factory(node), address, port, timeout)

    def whoami(self, node: str, address: str, port: int = 80, *, timeout: float = 3.0) -> str:
        """Which way a connection from ``node`` to ``address`` left: "uk", "ru", "us" or
        "direct", by the source address the far side saw (``SEEN_AS``)."""
        body = self.lab.seen(node, address, port, timeout=timeout)
        try:
            return SEEN_AS[ipaddress.ip_address(body["seen"])]
        except (KeyError, ValueError):
            raise LabError(
                f"from {node} to {address} port {port}: the far side saw {body['seen']}, "
                f"which is no exit's uplink address ({', '.join(map(str, SEEN_AS))})"
            ) from None

    def hold(
        self, node: str, address: str, seconds: int = 10, *, port: int = 80, timeout: float = 3.0
    ) -> probes.HeldConnection:
        """A connection the whoami server keeps open, one line a second for ``seconds``.
        ``exit_of(line)`` names the way each line came."""
        with self._explained(node, address):
            return probes.HeldConnection(self._factory(node), address, seconds, port, timeout)

    @staticmethod
    def exit_of(line: dict[str, Any]) -> str | None:
        """The exit a whoami line was seen through (None: not an exit's address)."""
        return SEEN_AS.get(ipaddress.ip_address(line["seen"]))

    def query(
        self,
        node: str,
        name: str,
        rtype: str = "A",
        *,
        server: str,
        port: int = 53,
        tcp: bool = False,
        edns: int | None = None,
        timeout: float = 2.0,
    ) -> probes.DnsAnswer:
        """A real DNS query from a node: UDP, then TCP if truncated (or TCP only)."""
        self.lab.check_running()
        return probes.dns_query(
            self._factory(node),
            server,
            name,
            rtype,
            port=port,
            tcp=tcp,
            edns=edns,
            timeout=timeout,
            where=f" from {node} ({self.lab.ns(node)})",
        )
