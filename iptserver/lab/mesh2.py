"""The mesh lab with a second entry: ``entry2``, its own uplink, tunnels to the exits and
to the office, and a second way from the client.

```
client ─(lan)── entry ══wg══ uk/ru/us ══wg══ entry2 ──(lan2)─ client
                   ║  └──(uplink)── internet ──(uplink)──┘   ║
                   ╚══wg══ office ══════════wg═══════════════╝
```

As in ``MeshLab``, the tunnels and the routing over them come only from rendered files;
``mesh_schema`` is the ``nodes:`` and ``tunnels:`` of a schema with both entries. Each
machine being its own, entry2's client side looks like entry's: the same interface name
(``clients``) and the same address (10.77.1.1), so a client uses the same DNS address on
either; the client namespace has a veth to each entry, and ``switch_client`` moves its
address and default route from one to the other (as a phone switches configs). entry2's
tunnel ends have names of their own (``wy<id>uk``; the exits' and the office's ends of
them ``wz<id>uk``): wireguard-go's sockets share one directory, and the schema resolves
the policy's interface names on entry2 through the mesh (``iptserver run --node entry2``).
entry2's tunnels cost more in OSPF (``ENTRY2_COST``), so the office prefers entry.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from iptserver.lab.addresses import CLIENT, CLIENT_PREFIX, UPLINK
from iptserver.lab.errors import LabError
from iptserver.lab.mesh import CLIENT_SUBNET, EXIT_PORT, OFFICE_PORT, MeshLab
from iptserver.lab.node_config import CLIENT_LAN, INGRESS

ENTRY2 = "entry2"
ENTRY2_UPLINK = ("198.18.8.1", "198.18.8.2")  # entry2 side, internet side; /30
ENTRY2_ROUTER_ID = "10.255.0.2"
ENTRY2_TUNNELS = {  # entry2 gets .1, the far end .2
    "uk": ipaddress.ip_network("10.9.11.0/30"),
    "ru": ipaddress.ip_network("10.9.12.0/30"),
    "us": ipaddress.ip_network("10.9.13.0/30"),
    "office": ipaddress.ip_network("10.9.19.0/30"),
}
ENTRY2_EXIT_PORT = EXIT_PORT + 1  # each exit listens for entry2 here
ENTRY2_COST = 20  # OSPF cost of entry2's tunnels (the default is 10)
CLIENT_LAN2 = "lan2"  # the client's veth to entry2


class TwoEntryLab(MeshLab):
    """``with TwoEntryLab() as lab:`` the mesh lab's nodes plus ``entry2``."""

    nodes = (*MeshLab.nodes, ENTRY2)  # type: ignore[assignment]  # MeshLab fixes its length

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.client_on = "entry"

    # -- names ----------------------------------------------------------------------

    def entry2_interface(self, peer: str, side: str = ENTRY2) -> str:
        """The tunnel between entry2 and ``peer`` (an exit or office): entry2's end
        (``wy<id><peer>``) or the peer's (``wz<id><peer>``)."""
        if peer not in ENTRY2_TUNNELS:
            raise LabError(f"entry2 has tunnels to {', '.join(ENTRY2_TUNNELS)}, not {peer!r}")
        if side not in (ENTRY2, peer):
            raise LabError(f"the tunnel entry2-{peer} has no side {side!r}")
        short = "of" if peer == "office" else peer
        return f"{'wy' if side == ENTRY2 else 'wz'}{self.id}{short}"

    @property
    def wg_interfaces(self) -> list[str]:
        return [
            *super().wg_interfaces,
            *(self.entry2_interface(p, side) for p in ENTRY2_TUNNELS for side in (ENTRY2, p)),
        ]

    def tunnel_ends(self) -> dict[str, str]:
        ends = super().tunnel_ends()
        for peer in ENTRY2_TUNNELS:
            ends[self.entry2_interface(peer)] = ENTRY2
            ends[self.entry2_interface(peer, peer)] = peer
        return ends

    def entry_tunnels(self, node: str = "entry") -> list[str]:
        """The tunnel ends of an entry."""
        return [iface for iface, where in self.tunnel_ends().items() if where == node]

    def mesh_schema(self, *, ipv6: bool = False) -> str:
        """``MeshLab.mesh_schema`` with entry2 and its tunnels (IPv4 only)."""
        if ipv6:
            raise LabError("the two-entry lab is IPv4 only")
        text = super().mesh_schema()
        nodes, tunnels = text.split("tunnels:\n")
        node = (
            f"  {ENTRY2}: {{entry: true, endpoint: {ENTRY2_UPLINK[0]}, "
            f"subnets: [{CLIENT_SUBNET}], "
            f"router_id: {ENTRY2_ROUTER_ID}}}\n"
        )
        lines = []
        for peer, subnet in ENTRY2_TUNNELS.items():
            mine, theirs = self.entry2_interface(peer), self.entry2_interface(peer, peer)
            if peer == "office":  # entry2 listens, the office dials
                own = f"{{interface: {mine}, expose: {OFFICE_PORT}, ospf_cost: {ENTRY2_COST}}}"
                far = f"{{interface: {theirs}, ospf_cost: {ENTRY2_COST}}}"
            else:
                own = f"{{interface: {mine}, ospf_cost: {ENTRY2_COST}}}"
                far = f"{{interface: {theirs}, expose: {ENTRY2_EXIT_PORT}}}"
            lines += [
                f"  {peer}_link2:",
                f"    subnet: {subnet}",
                "    hosts:",
                f"      {ENTRY2}: {own}",
                f"      {peer}: {far}",
            ]
        return nodes + node + "tunnels:\n" + tunnels + "\n".join(lines) + "\n"

    # -- the client's switch ------------------------------------------------------------

    def switch_client(self, to: str) -> None:
        """The client leaves the entry it uses for ``to`` (entry or entry2): the same
        address and default route, on the veth to ``to``."""
        if to not in ("entry", ENTRY2):
            raise LabError(f"the client can use entry or {ENTRY2}, not {to!r}")
        (client4, entry4), _ = CLIENT
        old, new = (CLIENT_LAN, CLIENT_LAN2) if to == ENTRY2 else (CLIENT_LAN2, CLIENT_LAN)
        self.ip_batch(
            "client",
            [
                f"link set {old} down",
                f"addr flush dev {old}",
                f"addr replace {client4}/{CLIENT_PREFIX[0]} dev {new}",
                f"link set {new} up",
                f"route replace default via {entry4} dev {new}",
                "neigh flush all",
            ],
        )
        self.client_on = to

    # -- probes ---------------------------------------------------------------------

    def whoami(self, node: str, address: str, port: int = 80, *, timeout: float = 3.0) -> str:
        """As ``MeshLab.whoami``, and "entry2" for what left by entry2's own uplink."""
        if self.seen(node, address, port, timeout=timeout)["seen"] == ENTRY2_UPLINK[0]:
            return ENTRY2
        return super().whoami(node, address, port, timeout=timeout)

    # -- building -------------------------------------------------------------------

    def _sysctls(self, node: str) -> dict[str, int]:
        return super()._sysctls("entry" if node == ENTRY2 else node)

    def _wire(self) -> None:
        super()._wire()
        self.ip_batch(
            "internet",
            [f"link add up-{ENTRY2} type veth peer name {UPLINK} netns {self.ns(ENTRY2)}"],
        )
        self.ip_batch(
            ENTRY2,
            [f"link add {INGRESS} type veth peer name {CLIENT_LAN2} netns {self.ns('client')}"],
        )

    def _configure(self, node: str) -> None:
        if node != ENTRY2:
            super()._configure(node)
        if node == "internet":
            self.ip_batch(
                "internet",
                [f"link set up-{ENTRY2} up", f"addr add {ENTRY2_UPLINK[1]}/30 dev up-{ENTRY2}"],
            )
        elif node == ENTRY2:
            (_, entry4), _ = CLIENT
            self.ip_batch(
                ENTRY2,
                [
                    "link set lo up",
                    f"link set {UPLINK} up",
                    f"addr add {ENTRY2_UPLINK[0]}/30 dev {UPLINK}",
                    f"route add default via {ENTRY2_UPLINK[1]}",
                    f"link set {INGRESS} up",
                    f"addr add {entry4}/{CLIENT_PREFIX[0]} dev {INGRESS}",
                ],
            )
            rule = ["-w", "-t", "nat", "-A", "POSTROUTING", "-o", UPLINK, "-j", "MASQUERADE"]
            self.run(ENTRY2, ["iptables", *rule])
