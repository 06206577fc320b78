"""Fault injection: what goes wrong with an exit or a tunnel, on purpose, in a running lab.

Each fault has its undo; tests use them to watch iptserver fail over and come back.
``Lab`` offers them as its own methods (``lab.kill_exit("uk")``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from iptserver.lab.addresses import EXIT_NAMES, TUNNEL_PREFIX, TUNNELS, UPLINK
from iptserver.lab.errors import LabError

if TYPE_CHECKING:
    from iptserver.lab.topology import Lab


class Faults:
    """The faults of one lab (composition: it acts through the lab's public commands)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def _cut(self, exit_name: str, action: Literal["-I", "-D"]) -> None:
        """Drop (or stop dropping) everything in and out of an exit node's uplink, in one
        ``iptables-restore`` per family (the first rule alone already kills the tunnel)."""
        if exit_name not in EXIT_NAMES:
            raise LabError(f"unknown exit {exit_name!r}; exits are {', '.join(EXIT_NAMES)}")
        ways = (("INPUT", "-i"), ("OUTPUT", "-o"), ("FORWARD", "-i"), ("FORWARD", "-o"))
        rules = "".join(f"{action} {chain} {way} {UPLINK} -j DROP\n" for chain, way in ways)
        for tool in ("iptables-restore", "ip6tables-restore"):
            self.lab.run(exit_name, [tool, "-w", "--noflush"], input=f"*filter\n{rules}COMMIT\n")

    def kill_exit(self, exit_name: str) -> None:
        """The exit node dies for the rest of the lab: its uplink drops every packet (the
        tunnel runs over it, so the tunnel dies too; no handshake, no traffic through)."""
        self._cut(exit_name, "-I")

    def revive_exit(self, exit_name: str) -> None:
        """Undo ``kill_exit``; the tunnel comes back with WireGuard's next handshake."""
        self._cut(exit_name, "-D")

    def drop_tunnel(self, exit_name: str) -> None:
        """Stop the entry's end of an exit's tunnel (its wireguard-go): the interface and
        every route through it are gone, as when the tunnel's container stops."""
        iface = self.lab.wg_interface(exit_name)
        proc = self.lab.wireguard_process(iface)
        if proc is None or proc.poll() is not None:
            raise LabError(f"the tunnel {iface} is not running")
        self.lab.stop_process(proc)
        self.lab.wait_for(f"{iface} to disappear", lambda: not self.lab.has_link("entry", iface))

    def make_tunnel(self, exit_name: str) -> None:
        """Start the entry's end of a dropped tunnel again, as the lab first made it (a new
        interface, so a new index); returns once it has a handshake."""
        iface = self.lab.wg_interface(exit_name)
        if self.lab.has_link("entry", iface):
            raise LabError(f"the tunnel {iface} is there already")
        self.lab.start_tunnel_end(exit_name)
        self.lab.wait_handshakes()

    def tunnel_down(self, exit_name: str) -> None:
        """``ip link set down`` the entry's end of an exit's tunnel: the kernel drops every
        route through it (the interface stays)."""
        self.lab.ip_batch("entry", [f"link set {self.lab.wg_interface(exit_name)} down"])

    def tunnel_up(self, exit_name: str) -> None:
        """Undo ``tunnel_down``, with the IPv6 address the kernel took away at down."""
        iface = self.lab.wg_interface(exit_name)
        (entry4, _), (entry6, _) = TUNNELS[exit_name]
        self.lab.ip_batch(
            "entry",
            [
                f"link set {iface} up",
                f"addr replace {entry4}/{TUNNEL_PREFIX[0]} dev {iface}",
                f"addr replace {entry6}/{TUNNEL_PREFIX[1]} dev {iface} nodad",
            ],
        )
