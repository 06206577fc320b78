"""The mesh lab: the lab plus an office behind its own WireGuard tunnel to the entry.

```
client ──(ingress)── entry ══wg══ uk/ru/us ──┐
                       ║ └──(uplink)─────────┼── internet
officehost ──(lan)── office ──(uplink)───────┘
                       ╚══wg══ entry
```

Unlike ``Lab``, a ``MeshLab`` configures no tunnel itself: it starts wireguard-go for
every tunnel interface and leaves them empty, so the tunnels and the routing over them
come only from ``iptserver render`` output (``apply_wireguard`` takes a wg-quick config,
``start_frr`` an FRR config). ``mesh_schema`` is the mesh part of a schema that fits
this lab (its interface names carry the lab id). Each node's default route is its own
uplink: what goes through the tunnels is what OSPF teaches.

The office masquerades what leaves its uplink (seen by the far side as "office"); the
office LAN and the client network reach each other unmasqueraded, through the entry.
Whoami servers in ``client`` and ``officehost`` (port ``LAN_WHOAMI_PORT``) show the
source address that arrived. Opt-in: the plain ``Lab`` builds none of this.
"""

from __future__ import annotations

import configparser
import contextlib
import functools
import io
import ipaddress
import os
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from iptserver.dataplane.links import attributes, messages
from iptserver.lab.addresses import EXIT_NAMES, TUNNELS, UPLINK, UPLINKS
from iptserver.lab.commands import parallel, run_command
from iptserver.lab.entry import ENTRY_DNS
from iptserver.lab.errors import LabError
from iptserver.lab.frr import DAEMONS, Frr
from iptserver.lab.state import wg_socket
from iptserver.lab.topology import NODES, POLL, Lab

OFFICE_NODES = ("office", "officehost")
OFFICE_UPLINK = ("198.18.9.1", "198.18.9.2")  # office side, internet side; /30
OFFICE_LAN = ("10.88.0.1", "10.88.0.2")  # office router, officehost; /24
OFFICE_SUBNET = ipaddress.ip_network("10.88.0.0/24")
CLIENT_SUBNET = ipaddress.ip_network("10.77.1.0/24")
OFFICE_TUNNEL = ipaddress.ip_network("10.9.9.0/30")  # entry gets .1, office .2
# IPv6 (a dual-stack mesh: ``mesh_schema(ipv6=True)``); the lab has it either way.
OFFICE_UPLINK6 = ("2001:db8:e009::1", "2001:db8:e009::2")  # office side, internet side; /64
OFFICE_LAN6 = ("fd88::1", "fd88::2")  # office router, officehost; /64
OFFICE_SUBNET6 = ipaddress.ip_network("fd88::/64")
CLIENT_SUBNET6 = ipaddress.ip_network("fd77:1::/64")
OFFICE_TUNNEL6 = ipaddress.ip_network("fd09:9::/64")  # entry gets ::1, office ::2
OFFICE_PORT = 51830  # the entry listens for the office here
EXIT_PORT = 51820  # each exit listens for the entry here
LAN = "lan"  # the office's and officehost's veth ends
LAN_WHOAMI_PORT = 8000
ROUTER_IDS = {
    "entry": "10.255.0.1",
    "uk": "10.255.0.11",
    "ru": "10.255.0.12",
    "us": "10.255.0.13",
    "office": "10.255.0.20",
}


class MeshLab(Lab):
    """``with MeshLab() as lab:`` the lab's nodes plus ``office`` and ``officehost``."""

    nodes = (*NODES, *OFFICE_NODES)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._frr: dict[str, Frr] = {}
        self._post_down: dict[str, list[list[str]]] = {}  # interface -> its config's hooks

    # -- names ----------------------------------------------------------------------

    def office_interface(self, side: str = "entry") -> str:
        """The office tunnel's interface on the entry (``wg<id>of``) or the office."""
        if side not in ("entry", "office"):
            raise LabError(f"the office tunnel has sides entry and office, not {side!r}")
        return f"{'wg' if side == 'entry' else 'wx'}{self.id}of"

    @property
    def wg_interfaces(self) -> list[str]:
        return [
            *super().wg_interfaces,
            self.office_interface("entry"),
            self.office_interface("office"),
        ]

    def tunnel_ends(self) -> dict[str, str]:
        """Interface -> the node it lives on, for every tunnel end of the lab."""
        ends = {self.office_interface("entry"): "entry", self.office_interface("office"): "office"}
        for exit_name in EXIT_NAMES:
            ends[self.wg_interface(exit_name, "entry")] = "entry"
            ends[self.wg_interface(exit_name, "exit")] = exit_name
        return ends

    def entry_schema(self) -> str:
        """The ``exits:``, ``ingress:`` and ``dns:`` of a schema for this lab's entry. The
        proxy listens on the entry's end of the office tunnel too: a REDIRECT sends a
        query to the address of the interface it arrived on."""
        office_end = next(OFFICE_TUNNEL.hosts())
        exits = "".join(f"  {e}: {{interface: {self.wg_interface(e)}}}\n" for e in EXIT_NAMES)
        return (
            f"exits:\n{exits}  direct: {{interface: _DEFAULT}}\n"
            f"ingress: [{self.ingress}, {self.office_interface('entry')}]\n"
            "dns:\n"
            f'  listen: ["{ENTRY_DNS}:53", "{office_end}:53"]\n'
            '  upstream: ["203.0.113.53:53"]\n'
        )

    def mesh_schema(self, *, ipv6: bool = False) -> str:
        """The ``nodes:`` and ``tunnels:`` of a schema that fits this lab; ``ipv6``: a
        dual-stack mesh (each tunnel a ``subnet6``, the LANs' IPv6 subnets)."""
        client_subnets = f"{CLIENT_SUBNET}, '{CLIENT_SUBNET6}'" if ipv6 else f"{CLIENT_SUBNET}"
        office_subnets = f"{OFFICE_SUBNET}, '{OFFICE_SUBNET6}'" if ipv6 else f"{OFFICE_SUBNET}"
        lines = ["nodes:"]
        lines.append(
            f"  entry: {{entry: true, endpoint: {UPLINKS['entry'][0][0]}, "
            f"subnets: [{client_subnets}], router_id: {ROUTER_IDS['entry']}}}"
        )
        for exit_name in EXIT_NAMES:
            lines.append(
                f"  {exit_name}: {{endpoint: {UPLINKS[exit_name][0][0]}, "
                f"router_id: {ROUTER_IDS[exit_name]}}}"
            )
        lines.append(
            f"  office: {{endpoint: {OFFICE_UPLINK[0]}, subnets: [{office_subnets}], "
            f"router_id: {ROUTER_IDS['office']}}}"
        )
        lines.append("tunnels:")
        for exit_name in EXIT_NAMES:
            (entry4, _), (entry6, _) = TUNNELS[exit_name]
            subnet = ipaddress.ip_network(f"{entry4}/30", strict=False)
            subnet6 = ipaddress.ip_network(f"{entry6}/64", strict=False)
            lines += [
                f"  {exit_name}_link:",
                f"    subnet: {subnet}",
                *([f"    subnet6: '{subnet6}'"] if ipv6 else []),
                "    hosts:",
                f"      entry: {{interface: {self.wg_interface(exit_name, 'entry')}}}",
                f"      {exit_name}: {{interface: {self.wg_interface(exit_name, 'exit')}, "
                f"expose: {EXIT_PORT}}}",
            ]
        lines += [
            "  office_link:",
            f"    subnet: {OFFICE_TUNNEL}",
            *([f"    subnet6: '{OFFICE_TUNNEL6}'"] if ipv6 else []),
            "    hosts:",
            f"      entry: {{interface: {self.office_interface('entry')}, expose: {OFFICE_PORT}}}",
            f"      office: {{interface: {self.office_interface('office')}}}",
        ]
        return "\n".join(lines) + "\n"

    # -- configuring it from rendered files ---------------------------------------------

    def apply_wireguard(self, node: str, interface: str, config: str) -> None:
        """Configure a tunnel end from a wg-quick config, as ``wg-quick up`` would with
        ``Table = off``: ``wg setconf`` with the stripped config, its Address, link up.
        Of the PostUp/PostDown hooks only ``ip`` commands run (routing rules; the lab
        masquerades on its own): the previous config's PostDown ones first, as
        ``wg-quick down`` would, then the new PostUp ones."""
        if self.tunnel_ends().get(interface) != node:
            raise LabError(f"{interface} is no tunnel end of {node} in lab {self.id}")
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read_string(_first_section_only(config))
        except configparser.Error as e:
            raise LabError(f"{node}/{interface}.conf: not a wg-quick config: {e}") from e
        table = parser.get("Interface", "Table", fallback="auto")
        if table != "off":
            raise LabError(
                f"{node}/{interface}.conf: Table = {table}; the lab applies only Table = off "
                "configs (routes come from OSPF)"
            )
        addresses = [
            a.strip()
            for a in parser.get("Interface", "Address", fallback="").split(",")
            if a.strip()
        ]
        path = self.workdir / "wireguard" / node / f"{interface}.conf"
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(config)
        stripped = run_command(["wg-quick", "strip", str(path)], "the root namespace").stdout
        self.run(node, ["wg", "setconf", interface, "/dev/stdin"], input=stripped)
        self.ip_batch(
            node,
            [f"addr replace {address} dev {interface}" for address in addresses]
            + [f"link set {interface} up"],
        )
        for hook in self._post_down.pop(interface, []):
            self.run(node, hook, check=False)
        self._post_down[interface] = _ip_hooks(config, "PostDown", interface)
        for hook in _ip_hooks(config, "PostUp", interface):
            self.run(node, hook)

    def drop_tunnel_end(self, interface: str) -> None:
        """The tunnel end is gone, as when its container stops: its interface (and with it
        its wireguard-go and every route through it)."""
        node = self.tunnel_ends()[interface]
        self.ip_batch(node, [f"link del {interface}"])
        self.wait_for(f"{interface} to disappear", lambda: not self.has_link(node, interface))

    def make_tunnel_end(self, interface: str, config: str) -> None:
        """A dropped tunnel end made anew (a new interface) from its rendered config."""
        node = self.tunnel_ends()[interface]
        env = {**os.environ, "LOG_LEVEL": "verbose"}
        proc = self.spawn(
            node, ["wireguard-go", "-f", interface], name=f"{interface}-again", env=env
        )
        sock = wg_socket(interface)
        self.wait_for(f"{sock} (wireguard-go)", sock.exists, [proc])
        self.apply_wireguard(node, interface, config)

    def deploy(self, schema: Path, work: Path) -> None:
        """Every tunnel and FRR from ``iptserver render wireguard`` (keys in WORK/state)
        and ``render frr`` output for ``schema``, as an operator would deploy them."""
        state = ("--state-dir", str(work / "state"))
        wireguard = render_files(schema, "wireguard", work / "wireguard", *state)
        for (node, name), text in wireguard.items():
            self.apply_wireguard(node, name.removesuffix(".conf"), text)
        self.wait_tunnels()
        for (node, name), text in render_files(schema, "frr", work / "frr").items():
            if name == "frr.conf":
                self.start_frr(node, text)

    def wait_tunnels(self, timeout: float | None = None) -> None:
        """Until every tunnel end has completed a WireGuard handshake."""
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        while True:
            missing = [
                iface
                for iface, node in self.tunnel_ends().items()
                if not self._handshake(node, iface)
            ]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise LabError(f"no WireGuard handshake on {', '.join(missing)} in lab {self.id}")
            time.sleep(POLL * 5)

    def _handshake(self, node: str, interface: str) -> bool:
        out = self.run(node, ["wg", "show", interface, "latest-handshakes"]).stdout
        return any(int(line.split()[1]) for line in out.splitlines() if line.strip())

    def start_frr(self, node: str, config: str) -> Frr:
        """FRR (zebra + ospfd, and ospf6d for a config with ``router ospf6``) on a node
        from an frr.conf text; stopped at teardown."""
        if node in self._frr:
            raise LabError(f"FRR already runs on {node}; stop_frr first")
        daemons = (*DAEMONS, "ospf6d") if "\nrouter ospf6\n" in config else DAEMONS
        frr = Frr(self, node, config, daemons=daemons)
        frr.start()
        self._frr[node] = frr
        return frr

    def stop_frr(self, node: str) -> None:
        frr = self._frr.pop(node, None)
        if frr is not None:
            frr.stop()

    def frr(self, node: str) -> Frr:
        try:
            return self._frr[node]
        except KeyError:
            raise LabError(f"FRR does not run on {node}") from None

    # -- probes ---------------------------------------------------------------------

    def whoami(self, node: str, address: str, port: int = 80, *, timeout: float = 3.0) -> str:
        """As ``Lab.whoami``, and "office" for what left by the office's own uplink."""
        body = self.seen(node, address, port, timeout=timeout)
        if body["seen"] in (OFFICE_UPLINK[0], OFFICE_UPLINK6[0]):
            return "office"
        return super().whoami(node, address, port, timeout=timeout)

    # -- building -------------------------------------------------------------------

    def _build(self) -> None:
        parallel(functools.partial(self._make_namespace, n) for n in self.nodes)
        servers = self._start_servers()
        for node in ("client", "officehost"):
            ready = self.workdir / f"whoami-{node}.ready"
            argv = [
                self.python,
                "-m",
                "iptserver.lab.whoami",
                "--port",
                str(LAN_WHOAMI_PORT),
                "--ready-file",
                str(ready),
            ]
            servers[ready] = self.spawn(node, argv, name="whoami", env=self._env())
        env = {**os.environ, "LOG_LEVEL": "verbose"}
        wireguard = {
            iface: self.spawn(node, ["wireguard-go", "-f", iface], name=iface, env=env)
            for iface, node in self.tunnel_ends().items()
        }
        self._wire()
        self._wire_office()
        parallel(functools.partial(self._configure, n) for n in self.nodes)
        for iface, proc in wireguard.items():
            sock = wg_socket(iface)
            self.wait_for(f"{sock} (wireguard-go)", sock.exists, [proc])
        self._wait_servers(servers)

    def _sysctls(self, node: str) -> dict[str, int]:
        values = super()._sysctls(node)
        if node == "office":
            values |= {
                "net/ipv4/ip_forward": 1,
                "net/ipv6/conf/all/forwarding": 1,
                "net/ipv6/conf/default/forwarding": 1,
            }
        return values

    def _wire_office(self) -> None:
        self.ip_batch(
            "internet",
            [f"link add up-office type veth peer name {UPLINK} netns {self.ns('office')}"],
        )
        self.ip_batch(
            "office", [f"link add {LAN} type veth peer name {LAN} netns {self.ns('officehost')}"]
        )

    def _configure(self, node: str) -> None:
        if node not in OFFICE_NODES:
            super()._configure(node)
        if node == "internet":
            self.ip_batch(
                "internet",
                [
                    "link set up-office up",
                    f"addr add {OFFICE_UPLINK[1]}/30 dev up-office",
                    f"addr add {OFFICE_UPLINK6[1]}/64 dev up-office nodad",
                ],
            )
        elif node == "office":
            self.ip_batch(
                "office",
                [
                    "link set lo up",
                    f"link set {UPLINK} up",
                    f"addr add {OFFICE_UPLINK[0]}/30 dev {UPLINK}",
                    f"route add default via {OFFICE_UPLINK[1]}",
                    f"addr add {OFFICE_UPLINK6[0]}/64 dev {UPLINK} nodad",
                    f"route add default via {OFFICE_UPLINK6[1]}",
                    f"link set {LAN} up",
                    f"addr add {OFFICE_LAN[0]}/{OFFICE_SUBNET.prefixlen} dev {LAN}",
                    f"addr add {OFFICE_LAN6[0]}/{OFFICE_SUBNET6.prefixlen} dev {LAN} nodad",
                ],
            )
            rule = ["-w", "-t", "nat", "-A", "POSTROUTING", "-o", UPLINK, "-j", "MASQUERADE"]
            for tool in ("iptables", "ip6tables"):
                self.run("office", [tool, *rule])
        elif node == "officehost":
            self.ip_batch(
                "officehost",
                [
                    "link set lo up",
                    f"link set {LAN} up",
                    f"addr add {OFFICE_LAN[1]}/{OFFICE_SUBNET.prefixlen} dev {LAN}",
                    f"route add default via {OFFICE_LAN[0]}",
                    f"addr add {OFFICE_LAN6[1]}/{OFFICE_SUBNET6.prefixlen} dev {LAN} nodad",
                    f"route add default via {OFFICE_LAN6[0]}",
                ],
            )

    # -- teardown -------------------------------------------------------------------

    def close(self) -> list[str]:
        problems = []
        for node in list(self._frr):
            try:
                self.stop_frr(node)
            except (LabError, OSError, subprocess.SubprocessError) as e:
                problems.append(f"FRR on {node}: {e}")
        return problems + super().close()  # also removes FRR instance directories


def _ip_hooks(config: str, key: str, interface: str) -> list[list[str]]:
    """A wg-quick config's ``ip`` hook commands (PostUp or PostDown), %i filled in (one
    per line: configparser keeps only the last of repeated keys)."""
    hooks = []
    for line in _first_section_only(config).splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key and value.strip().startswith("ip "):
            hooks.append(value.strip().replace("%i", interface).split())
    return hooks


def _first_section_only(config: str) -> str:
    """The [Interface] section of a wg-quick config (configparser rejects repeated
    [Peer] sections, and only the interface's settings are read here)."""
    lines = []
    for line in config.splitlines():
        if line.strip().startswith("[") and line.strip() != "[Interface]":
            break
        lines.append(line)
    return "\n".join(lines) + "\n"


def render_files(schema: Path, what: str, out: Path, *extra: str) -> dict[tuple[str, str], str]:
    """``iptserver render WHAT SCHEMA --out OUT`` as an operator runs it (the files it lists
    on stdout are not printed): (node, file name) -> text."""
    from iptserver.cli import main  # the CLI imports the lab for `iptserver demo`

    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["render", what, str(schema), "--out", str(out), *extra])
    if code != 0:
        raise LabError(f"iptserver render {what} {schema} exited {code}")
    return read_rendered(out)


def read_rendered(directory: Path) -> dict[tuple[str, str], str]:
    """Files an ``iptserver render ... --out DIR`` wrote: (node, file name) -> text."""
    found = {}
    for path in sorted(directory.glob("*/*")):
        if path.is_file():
            found[(path.parent.name, path.name)] = path.read_text(encoding="utf-8")
    return found


RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
RTM_NEWROUTE = 24
RTA_DST = 1
RTMSG = struct.Struct("=BBBBBBBBI")


class RouteWatch:
    """When a host route appears in a node's kernel, timed as the event arrives.

    A netlink socket inside the node's namespace, subscribed to route events (of the
    address's family) before the action under test, read by a thread that notes the moment
    the route for ``address`` is added (polling ``ip route`` would measure the polling
    instead).
    """

    def __init__(self, lab: Lab, node: str, address: str) -> None:
        self.address = ipaddress.ip_address(address)
        self.seen_at: float | None = None
        self._found = threading.Event()
        self._sock = lab.socket(node, socket.AF_NETLINK, socket.SOCK_RAW)
        self._sock.bind((0, RTMGRP_IPV4_ROUTE if self.address.version == 4 else RTMGRP_IPV6_ROUTE))
        self._sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._read, name=f"routewatch-{node}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop and not self._found.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            if self._adds_route(data):
                self.seen_at = now
                self._found.set()

    def _adds_route(self, data: bytes) -> bool:
        for kind, body, end in messages(data):
            if kind != RTM_NEWROUTE or body + RTMSG.size > end:
                continue
            if RTMSG.unpack_from(data, body)[1] != self.address.max_prefixlen:
                continue
            for attr, value in attributes(data, body + RTMSG.size, end):
                if attr == RTA_DST and value == self.address.packed:
                    return True
        return False

    def wait(self, timeout: float) -> float | None:
        """The monotonic time the route appeared, or None if it did not in ``timeout``."""
        self._found.wait(timeout)
        return self.seen_at

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self._sock.close()
