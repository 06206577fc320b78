"""The lab: a whole VPN mesh in network namespaces, built and torn down by ``Lab``.

```
client ──(ingress veth)── entry ──wg── uk ─┐
                            │ ├───wg── ru ─┼── internet (DNS authority, whoami servers)
                            │ └───wg── us ─┘
                            └──(uplink veth = the host gateway)──┘
```

Why it is built this way:
- Every name carries a random lab id (namespaces ``ipts<id>-<node>``, WireGuard
  interfaces ``wg<id><exit>`` / ``wx<id><exit>``), so labs can run side by side.
- Nothing touches the root namespace: veths are created directly inside the lab's
  namespaces, and ``internet`` has no way out, so no packet leaves the lab.
- Build time matters (tests build labs often): independent steps run in parallel
  threads, the slow starters (Python servers, wireguard-go) are spawned first, and
  readiness is polled, never slept for.
- Teardown kills by PID, deletes the namespaces and removes sockets and keys, also on
  exceptions and Ctrl-C; a state file lets the next lab reap one left by a killed run.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal

import iptserver
from iptserver.lab import probes
from iptserver.lab.addresses import (
    CLIENT,
    CLIENT_PREFIX,
    DNS_AUTHORITY,
    EXIT_NAMES,
    LAB_COUNTRIES,
    LAB_UNPLACED,
    MESH,
    SEEN_AS,
    TUNNEL_PREFIX,
    TUNNELS,
    UPLINK_PREFIX,
    UPLINKS,
    WG_PORT,
)
from iptserver.lab.errors import CommandError, LabError, ProbeError
from iptserver.lab.netns import NETNS_DIR, socket_in
from iptserver.lab.processes import stop_children
from iptserver.lab.state import (
    NS_PREFIX,
    STATE_DIR,
    WORKDIR_PREFIX,
    LabState,
    reap_stale_labs,
    remove_files,
    remove_namespaces,
    start_time,
    wg_socket,
)

__all__ = ["NODES", "CommandError", "Lab", "LabError", "ProbeError"]

log = logging.getLogger("iptserver.lab")

NODES = ("client", "entry", *EXIT_NAMES, "internet")
FORWARDERS = frozenset({"entry", *EXIT_NAMES, "internet"})
UPLINK = "uplink"  # a node's veth to internet; internet's side is up-<node>
INGRESS = "clients"  # entry's veth to the client (stands in for wg-clients)
CLIENT_LAN = "lan"  # the client's side of it
WHOAMI_PORTS = (80, 8080)
STOP_GRACE = 3.0
POLL = 0.01  # seconds between readiness checks


def _parallel(calls: Iterable[Callable[[], object]]) -> None:
    """Run independent steps at once (they wait on subprocesses, not on the GIL)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(call) for call in calls]
    errors = [exc for f in futures if (exc := f.exception()) is not None]
    for extra in errors[1:]:
        log.error("also failed: %s", extra)
    if errors:
        raise errors[0]


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Let a teardown finish even if Ctrl-C is pressed again; re-raise it afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        pressed.append(signum)
        log.warning("still tearing the lab down; interrupt noted")

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join(f"  | {line}" for line in text) or "  | (empty log)"


def _far_side_routes() -> list[str]:
    """AnyIP: every lab server address is local in internet, served by one socket each."""
    nets = [n for country in LAB_COUNTRIES.values() for n in country] + list(LAB_UNPLACED)
    collapsed = [
        *ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv4Network)),
        *ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv6Network)),
    ]
    return [f"route add local {net} dev lo" for net in collapsed]


class Lab:
    """The lab, as a context manager: ``with Lab() as lab: ...``.

    Nodes are named ``client``, ``entry``, ``uk``, ``ru``, ``us`` and ``internet``; every
    method taking a ``node`` runs there. The entry has no policy routing: its main table
    sends everything out of its uplink (seen as ``direct``), and its tunnels only have
    connected routes, ready for iptserver to program.
    """

    nodes: tuple[str, ...] = NODES  # a subclass may add nodes (iptserver.lab.mesh)

    def __init__(
        self,
        *,
        lab_id: str | None = None,
        state_dir: Path = STATE_DIR,
        rp_filter: int = 2,
        ready_timeout: float = 10.0,
        python: str = sys.executable,
    ) -> None:
        """``rp_filter``: reverse-path filtering in every namespace (2 = loose, the
        systemd/Debian default; IPv4 settings of a new namespace are otherwise copied
        from the root namespace, which differs between machines).
        ``ready_timeout``: seconds to wait for servers, tunnels and handshakes."""
        if lab_id is not None and not re.fullmatch(r"[0-9a-f]{4}", lab_id):
            raise LabError(f"lab id {lab_id!r}: want 4 lower-case hex digits")
        self._id = lab_id
        self.state_dir = state_dir
        self.rp_filter = rp_filter
        self.ready_timeout = ready_timeout
        self.python = python
        self.workdir = Path()
        self._state: LabState | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}  # pid -> log file
        self._labels: dict[int, str] = {}  # pid -> what it is, for messages
        self._lock = threading.Lock()
        self._closing = False
        self._pubkeys: dict[str, str] = {}
        self._wireguard: dict[str, subprocess.Popen[bytes]] = {}  # interface -> its process
        self.build_seconds = 0.0

    # -- names ----------------------------------------------------------------------

    @property
    def id(self) -> str:
        if self._id is None:
            raise LabError("the lab has no id before it starts")
        return self._id

    def ns(self, node: str) -> str:
        """The namespace name of a node, e.g. ``ipts1a2b-entry``."""
        if node not in self.nodes:
            raise LabError(f"unknown lab node {node!r}; nodes are {', '.join(self.nodes)}")
        return f"{NS_PREFIX}{self.id}-{node}"

    @property
    def namespaces(self) -> list[str]:
        return [self.ns(node) for node in self.nodes]

    def wg_interface(self, exit_name: str, side: Literal["entry", "exit"] = "entry") -> str:
        """The WireGuard interface of a tunnel: on the entry (default) or the exit.

        Fact: wireguard-go's control socket is /var/run/wireguard/IFACE.sock for every
        namespace of the host, so the name carries the lab id (15 characters at most).
        """
        if exit_name not in EXIT_NAMES:
            raise LabError(f"unknown exit {exit_name!r}; exits are {', '.join(EXIT_NAMES)}")
        return f"{'wg' if side == 'entry' else 'wx'}{self.id}{exit_name}"

    @property
    def wg_interfaces(self) -> list[str]:
        return [self.wg_interface(e, side) for e in EXIT_NAMES for side in ("entry", "exit")]

    @property
    def ingress(self) -> str:
        """The entry's interface toward the client (what a schema calls wg-clients)."""
        return INGRESS

    def uplink(self, node: str) -> str:
        """The interface of entry or an exit toward internet (internet's side: up-NODE)."""
        if node not in UPLINKS:
            raise LabError(f"{node} has no uplink; nodes with one: {', '.join(UPLINKS)}")
        return UPLINK

    def schema_text(self, path: str | os.PathLike[str]) -> str:
        """A schema's text with wg-uk/wg-ru/wg-us and wg-clients named as in this lab."""
        names = {f"wg-{e}": self.wg_interface(e) for e in EXIT_NAMES}
        names["wg-clients"] = self.ingress
        pattern = r"(?<![\w.-])(" + "|".join(map(re.escape, names)) + r")(?![\w.-])"
        text = Path(path).read_text(encoding="utf-8")
        return re.sub(pattern, lambda m: names[m.group(1)], text)

    # -- commands ---------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._state is None:
            raise LabError("the lab is not running (use `with Lab() as lab:`)")

    def _run(
        self,
        argv: Sequence[str],
        where: str,
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        log.debug("%s: %s", where, " ".join(argv))
        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, input=input, timeout=timeout
            )
        except FileNotFoundError as exc:
            raise LabError(f"in {where}: {argv[0]} is not installed (see APT_PACKAGES)") from exc
        except subprocess.TimeoutExpired as exc:
            raise LabError(
                f"in {where}: `{' '.join(argv)}` still running after {timeout} s"
            ) from exc
        if check and done.returncode:
            raise CommandError(where, argv, done.returncode, done.stdout, done.stderr, input)
        return done

    def run(
        self,
        node: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in a node's namespace (text output); CommandError if it fails."""
        self._check_running()
        ns = self.ns(node)
        return self._run(
            ["ip", "netns", "exec", ns, *argv],
            f"namespace {ns}",
            check=check,
            input=input,
            timeout=timeout,
        )

    def ip_batch(self, node: str, commands: Sequence[str]) -> None:
        """Several `ip` commands in one process (``ip -n NS -batch -``)."""
        ns = self.ns(node)
        self._run(["ip", "-n", ns, "-batch", "-"], f"namespace {ns}", input="\n".join(commands))

    def spawn(
        self,
        node: str,
        argv: Sequence[str],
        *,
        name: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in a node's namespace, killed at teardown.

        Its stdout and stderr go to ``workdir/logs/<node>-<name>.log`` (``log_path``).
        ``ip netns exec`` execs the command, so the Popen's PID is the command's own. It
        runs in its own session: a Ctrl-C in the terminal reaches only us, and we stop
        our processes in order at teardown.
        """
        ns = self.ns(node)
        label = name or Path(argv[0]).name
        path = self.workdir / "logs" / f"{node}-{label}.log"
        with self._lock:
            if self._closing or self._state is None:
                raise LabError(f"not starting {label} in {ns}: the lab is not running")
            with path.open("ab") as out:
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", ns, *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            self._procs.append(proc)
            self._logs[proc.pid] = path
            self._labels[proc.pid] = f"{label} in {ns}"
            started = start_time(proc.pid)
            if started is not None:
                self._state.processes.append((proc.pid, started))
                self._state.save(self.state_dir)
        log.debug("started %s in %s: pid %d, log %s", label, ns, proc.pid, path)
        return proc

    def log_path(self, proc: subprocess.Popen[bytes]) -> Path:
        return self._logs[proc.pid]

    def _exited(self, proc: subprocess.Popen[bytes], what: str) -> LabError:
        return LabError(
            f"{what}: {self._labels[proc.pid]} exited with {proc.returncode}\n"
            f"log {self._logs[proc.pid]}:\n{_tail(self._logs[proc.pid])}"
        )

    # -- exit failures ----------------------------------------------------------------

    def _cut(self, exit_name: str, action: Literal["-I", "-D"]) -> None:
        """Drop (or stop dropping) everything in and out of an exit node's uplink, in one
        ``iptables-restore`` per family (the first rule alone already kills the tunnel)."""
        if exit_name not in EXIT_NAMES:
            raise LabError(f"unknown exit {exit_name!r}; exits are {', '.join(EXIT_NAMES)}")
        ways = (("INPUT", "-i"), ("OUTPUT", "-o"), ("FORWARD", "-i"), ("FORWARD", "-o"))
        rules = "".join(f"{action} {chain} {way} {UPLINK} -j DROP\n" for chain, way in ways)
        for tool in ("iptables-restore", "ip6tables-restore"):
            self.run(exit_name, [tool, "-w", "--noflush"], input=f"*filter\n{rules}COMMIT\n")

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
        iface = self.wg_interface(exit_name)
        proc = self._wireguard.get(iface)
        if proc is None or proc.poll() is not None:
            raise LabError(f"the tunnel {iface} is not running")
        stop_children([proc], STOP_GRACE, self._labels.__getitem__)
        self._wait_for(f"{iface} to disappear", lambda: not self._has_link("entry", iface), [])

    def make_tunnel(self, exit_name: str) -> None:
        """Start the entry's end of a dropped tunnel again, as the lab first made it (a new
        interface, so a new index); returns once it has a handshake."""
        iface = self.wg_interface(exit_name)
        if self._has_link("entry", iface):
            raise LabError(f"the tunnel {iface} is there already")
        self._wireguard[iface] = self._start_wireguard(exit_name, "entry")
        self._tunnel(exit_name, "entry", self._wireguard)
        self.wait_handshakes()

    def tunnel_down(self, exit_name: str) -> None:
        """``ip link set down`` the entry's end of an exit's tunnel: the kernel drops every
        route through it (the interface stays)."""
        self.ip_batch("entry", [f"link set {self.wg_interface(exit_name)} down"])

    def tunnel_up(self, exit_name: str) -> None:
        """Undo ``tunnel_down``, with the IPv6 address the kernel took away at down."""
        iface = self.wg_interface(exit_name)
        (entry4, _), (entry6, _) = TUNNELS[exit_name]
        self.ip_batch(
            "entry",
            [
                f"link set {iface} up",
                f"addr replace {entry4}/{TUNNEL_PREFIX[0]} dev {iface}",
                f"addr replace {entry6}/{TUNNEL_PREFIX[1]} dev {iface} nodad",
            ],
        )

    def _has_link(self, node: str, iface: str) -> bool:
        argv = ["ip", "-n", self.ns(node), "link", "show", "dev", iface]
        return self._run(argv, "", check=False).returncode == 0

    # -- probes -----------------------------------------------------------------------

    def socket(
        self, node: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
    ) -> socket.socket:
        """A socket created inside a node's namespace (usable from any thread)."""
        self._check_running()
        return socket_in(self.ns(node), family, kind)

    def _factory(self, node: str) -> probes.SocketFactory:
        ns = self.ns(node)
        return lambda family, kind: socket_in(ns, family, kind)

    def _route_hint(self, node: str, address: str) -> str:
        done = self._run(["ip", "-n", self.ns(node), "route", "get", address], "", check=False)
        return (done.stdout or done.stderr).strip()

    def seen(
        self, node: str, address: str, port: int = 80, *, timeout: float = 3.0
    ) -> dict[str, Any]:
        """What the whoami server at ``address`` reports: ``{"seen": ..., "local": ...}``."""
        self._check_running()
        try:
            return probes.whoami(self._factory(node), address, port, timeout)
        except ProbeError as exc:
            hint = self._route_hint(node, address)
            raise LabError(f"from {node} ({self.ns(node)}): {exc}\n  ip route get: {hint}") from exc

    def whoami(self, node: str, address: str, port: int = 80, *, timeout: float = 3.0) -> str:
        """Which way a connection from ``node`` to ``address`` left: "uk", "ru", "us" or
        "direct", by the source address the far side saw (``SEEN_AS``)."""
        body = self.seen(node, address, port, timeout=timeout)
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
        self._check_running()
        try:
            return probes.HeldConnection(self._factory(node), address, seconds, port, timeout)
        except ProbeError as exc:
            hint = self._route_hint(node, address)
            raise LabError(f"from {node} ({self.ns(node)}): {exc}\n  ip route get: {hint}") from exc

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
        self._check_running()
        where = f" from {node} ({self.ns(node)})"
        return probes.dns_query(
            self._factory(node),
            server,
            name,
            rtype,
            port=port,
            tcp=tcp,
            edns=edns,
            timeout=timeout,
            where=where,
        )

    def resolve(
        self,
        node: str,
        name: str,
        rtype: str = "A",
        *,
        server: str,
        port: int = 53,
        timeout: float = 2.0,
    ) -> list[probes.DnsRecordTuple]:
        """The answer records (name, type, value, ttl) of a query; [] for NXDOMAIN."""
        return self.query(node, name, rtype, server=server, port=port, timeout=timeout).records

    # -- building ---------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        problems = self.close()
        if problems and kind is None:
            raise LabError("lab teardown incomplete:\n  " + "\n  ".join(problems))
        for problem in problems:
            log.error("lab teardown incomplete: %s", problem)

    def start(self) -> None:
        """Build the lab; on any failure (or Ctrl-C) tear down what was built, then raise."""
        if self.workdir != Path():
            raise LabError("a Lab starts once; make a new Lab() for another run")
        began = time.monotonic()
        reap_stale_labs(self.state_dir)  # labs of killed runs; it says what it reaps
        try:
            self._claim()
            self._build()
        except BaseException:
            problems = self.close()
            for problem in problems:
                log.error("%s", problem)
            raise
        self.build_seconds = time.monotonic() - began
        log.info("lab %s up in %.2f s: %s", self.id, self.build_seconds, " ".join(self.namespaces))

    def _claim(self) -> None:
        """Pick a free id, make the work directory, write the state file before anything."""
        if self._id is None:
            while True:
                self._id = secrets.token_hex(2)
                if not self._in_use():
                    break
        elif self._in_use():
            raise LabError(f"lab id {self._id} is in use (namespaces, sockets or state file)")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{self.id}-"))  # 0700
        (self.workdir / "keys").mkdir(mode=0o700)
        (self.workdir / "logs").mkdir()
        owner_start = start_time(os.getpid())
        assert owner_start is not None
        self._state = LabState(
            id=self.id,
            owner_pid=os.getpid(),
            owner_start=owner_start,
            namespaces=self.namespaces,
            wg_interfaces=self.wg_interfaces,
            workdir=str(self.workdir),
        )
        self._state.save(self.state_dir)

    def _in_use(self) -> bool:
        return (
            any((NETNS_DIR / ns).exists() for ns in self.namespaces)
            or any(wg_socket(i).exists() for i in self.wg_interfaces)
            or (self.state_dir / f"{self.id}.json").exists()
        )

    def _build(self) -> None:
        _parallel([*(functools.partial(self._make_namespace, n) for n in NODES), self._make_keys])
        servers = self._start_servers()  # Python start-up overlaps with the rest
        wireguard = self._wireguard
        for e in EXIT_NAMES:
            for side in ("entry", "exit"):
                wireguard[self.wg_interface(e, side)] = self._start_wireguard(e, side)
        self._wire()
        _parallel(functools.partial(self._configure, n) for n in NODES)
        # Exits first: an initiation reaching an unconfigured peer is retried only after
        # wireguard-go's 5 s REKEY_TIMEOUT.
        _parallel(functools.partial(self._tunnel, e, "exit", wireguard) for e in EXIT_NAMES)
        _parallel(functools.partial(self._tunnel, e, "entry", wireguard) for e in EXIT_NAMES)
        self._wait_servers(servers)
        self.wait_handshakes()

    def _sysctls(self, node: str) -> dict[str, int]:
        values = {
            # Addresses are usable at once: no 1-2 s of duplicate address detection.
            "net/ipv6/conf/all/accept_dad": 0,
            "net/ipv6/conf/default/accept_dad": 0,
            "net/ipv4/conf/all/rp_filter": self.rp_filter,
            "net/ipv4/conf/default/rp_filter": self.rp_filter,
        }
        if node in FORWARDERS:  # Fact: a new namespace starts with forwarding off.
            values |= {
                "net/ipv4/ip_forward": 1,
                "net/ipv6/conf/all/forwarding": 1,
                "net/ipv6/conf/default/forwarding": 1,
            }
        return values

    def _make_namespace(self, node: str) -> None:
        ns = self.ns(node)
        self._run(["ip", "netns", "add", ns], "the root namespace")
        # Before any interface exists, so "default" applies to every veth made later.
        script = "set -e\n" + "".join(
            f"echo {v} > /proc/sys/{k}\n" for k, v in self._sysctls(node).items()
        )
        self._run(["ip", "netns", "exec", ns, "sh", "-c", script], f"namespace {ns}")

    def _make_keys(self) -> None:
        def one(iface: str) -> None:
            private = self._run(["wg", "genkey"], "the root namespace").stdout
            path = self.workdir / "keys" / iface
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(private)
            public = self._run(["wg", "pubkey"], "the root namespace", input=private).stdout
            self._pubkeys[iface] = public.strip()

        _parallel(functools.partial(one, i) for i in self.wg_interfaces)

    def _env(self) -> dict[str, str]:
        """The servers import iptserver even from a checkout that is not installed."""
        root = str(Path(iptserver.__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}

    def _start_servers(self) -> dict[Path, subprocess.Popen[bytes]]:
        started = {}
        for module, args in (
            ("authority", [arg for a in DNS_AUTHORITY for arg in ("--listen", str(a))]),
            ("whoami", [arg for p in WHOAMI_PORTS for arg in ("--port", str(p))]),
        ):
            ready = self.workdir / f"{module}.ready"
            argv = [self.python, "-m", f"iptserver.lab.{module}", *args, "--ready-file", str(ready)]
            started[ready] = self.spawn("internet", argv, name=module, env=self._env())
        return started

    def _start_wireguard(
        self, exit_name: str, side: Literal["entry", "exit"]
    ) -> subprocess.Popen[bytes]:
        iface = self.wg_interface(exit_name, side)
        node = "entry" if side == "entry" else exit_name
        # -f: stay in the foreground, so the PID is ours to kill. Its log is in workdir.
        env = {**os.environ, "LOG_LEVEL": "verbose"}
        return self.spawn(node, ["wireguard-go", "-f", iface], name=iface, env=env)

    def _wire(self) -> None:
        """The veths, made inside the lab's namespaces (never in the root one)."""
        self.ip_batch(
            "internet",
            [
                f"link add up-{node} type veth peer name {UPLINK} netns {self.ns(node)}"
                for node in UPLINKS
            ],
        )
        self.ip_batch(
            "entry",
            [f"link add {INGRESS} type veth peer name {CLIENT_LAN} netns {self.ns('client')}"],
        )

    def _configure(self, node: str) -> None:
        commands = ["link set lo up"]
        if node == "internet":
            for peer, ((_, v4), (_, v6)) in UPLINKS.items():
                commands += [
                    f"link set up-{peer} up",
                    f"addr add {v4}/{UPLINK_PREFIX[0]} dev up-{peer}",
                    f"addr add {v6}/{UPLINK_PREFIX[1]} dev up-{peer} nodad",
                ]
            commands += _far_side_routes()
        elif node == "client":
            (client4, entry4), (client6, entry6) = CLIENT
            commands += [
                f"link set {CLIENT_LAN} up",
                f"addr add {client4}/{CLIENT_PREFIX[0]} dev {CLIENT_LAN}",
                f"addr add {client6}/{CLIENT_PREFIX[1]} dev {CLIENT_LAN} nodad",
                f"route add default via {entry4}",
                f"route add default via {entry6}",
            ]
        else:
            (mine4, gw4), (mine6, gw6) = UPLINKS[node]
            commands += [
                f"link set {UPLINK} up",
                f"addr add {mine4}/{UPLINK_PREFIX[0]} dev {UPLINK}",
                f"addr add {mine6}/{UPLINK_PREFIX[1]} dev {UPLINK} nodad",
                f"route add default via {gw4}",
                f"route add default via {gw6}",
            ]
        if node == "entry":
            (_, entry4), (_, entry6) = CLIENT
            commands += [
                f"link set {INGRESS} up",
                f"addr add {entry4}/{CLIENT_PREFIX[0]} dev {INGRESS}",
                f"addr add {entry6}/{CLIENT_PREFIX[1]} dev {INGRESS} nodad",
            ]
        self.ip_batch(node, commands)
        if node == "entry" or node in EXIT_NAMES:
            # Masquerade with the uplink address: how the far side tells the ways apart.
            # Fact: `iptables` is the nf_tables variant here; -w matters for the legacy one.
            for tool in ("iptables", "ip6tables"):
                rule = ["-w", "-t", "nat", "-A", "POSTROUTING", "-o", UPLINK, "-j", "MASQUERADE"]
                self.run(node, [tool, *rule])

    def _wait_for(
        self, what: str, ready: Callable[[], bool], procs: Sequence[subprocess.Popen[bytes]]
    ) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while not ready():
            for proc in procs:
                if proc.poll() is not None:
                    raise self._exited(proc, f"while waiting for {what}")
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"log {self._logs[p.pid]}:\n{_tail(self._logs[p.pid])}" for p in procs
                )
                raise LabError(f"timed out after {self.ready_timeout} s waiting for {what}\n{logs}")
            time.sleep(POLL)

    def _tunnel(
        self,
        exit_name: str,
        side: Literal["entry", "exit"],
        wireguard: dict[str, subprocess.Popen[bytes]],
    ) -> None:
        iface = self.wg_interface(exit_name, side)
        other = self.wg_interface(exit_name, "exit" if side == "entry" else "entry")
        node = "entry" if side == "entry" else exit_name
        sock = wg_socket(iface)
        self._wait_for(f"{sock} (wireguard-go in {self.ns(node)})", sock.exists, [wireguard[iface]])
        peer = ["peer", self._pubkeys[other], "allowed-ips", "0.0.0.0/0,::/0"]
        if side == "entry":
            endpoint = UPLINKS[exit_name][0][0]
            peer += ["endpoint", f"{endpoint}:{WG_PORT}", "persistent-keepalive", "1"]
        else:
            peer = ["listen-port", str(WG_PORT), *peer]
        self.run(
            node, ["wg", "set", iface, "private-key", str(self.workdir / "keys" / iface), *peer]
        )
        (entry4, exit4), (entry6, exit6) = TUNNELS[exit_name]
        mine4, mine6 = (entry4, entry6) if side == "entry" else (exit4, exit6)
        commands = [
            # No kernel-made (random) link-local address: a tunnel made anew
            # (make_tunnel) leaves the entry's kernel state as it was.
            f"link set {iface} addrgenmode none",
            f"addr add {mine4}/{TUNNEL_PREFIX[0]} dev {iface}",
            f"addr add {mine6}/{TUNNEL_PREFIX[1]} dev {iface} nodad",
            f"link set {iface} up",
        ]
        if side == "exit":  # the way back to the clients and the mesh
            commands += [f"route add {net} dev {iface}" for net in MESH]
        self.ip_batch(node, commands)

    def _wait_servers(self, servers: dict[Path, subprocess.Popen[bytes]]) -> None:
        for ready, proc in servers.items():
            self._wait_for(f"{ready.stem} server in {self.ns('internet')}", ready.exists, [proc])

    def handshakes(self) -> dict[str, int]:
        """Seconds since the epoch of each entry-side tunnel's latest handshake (0: none)."""
        latest = {}
        for exit_name in EXIT_NAMES:
            out = self.run(
                "entry", ["wg", "show", self.wg_interface(exit_name), "latest-handshakes"]
            ).stdout
            latest[exit_name] = max(
                (int(line.split()[1]) for line in out.splitlines() if line.strip()), default=0
            )
        return latest

    def wait_handshakes(self, timeout: float | None = None) -> None:
        """Until every tunnel has completed a WireGuard handshake."""
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        while True:
            latest = self.handshakes()
            if all(latest.values()):
                return
            if time.monotonic() > deadline:
                missing = [e for e, t in latest.items() if not t]
                logs = "\n".join(
                    f"log {self._logs[p.pid]}:\n{_tail(self._logs[p.pid])}"
                    for p in self._procs
                    if any(self._logs[p.pid].name.endswith(f"{e}.log") for e in missing)
                )
                raise LabError(
                    f"no WireGuard handshake on the tunnels to {', '.join(missing)}\n{logs}"
                )
            time.sleep(POLL)

    # -- teardown ---------------------------------------------------------------------

    def close(self) -> list[str]:
        """Tear everything down (idempotent). Returns what could not be removed."""
        if self._state is None:
            return []
        problems: list[str] = []
        with _interrupts_deferred():
            with self._lock:
                self._closing = True
            self._stop_processes()
            problems += remove_namespaces(self.id, self.namespaces)
            remove_files(self._state)
            left = [str(wg_socket(i)) for i in self.wg_interfaces if wg_socket(i).exists()]
            problems += [f"WireGuard socket still there: {path}" for path in left]
            if not problems:
                with contextlib.suppress(FileNotFoundError):
                    self._state.path(self.state_dir).unlink()
            log.info("lab %s torn down", self.id)
            self._state = None
        return problems

    def _stop_processes(self) -> None:
        stop_children(self._procs, STOP_GRACE, self._labels.__getitem__)

    def describe(self) -> str:
        """Namespaces, interfaces and addresses, for people."""
        lines = [f"lab {self.id} (work directory {self.workdir})"]
        for node in NODES:
            lines.append(f"  {node:9} {self.ns(node)}")
        (client4, entry4), (client6, entry6) = CLIENT
        lines += [
            f"  client {client4} {client6} -> entry {INGRESS} {entry4} {entry6}",
            "  entry tunnels: "
            + ", ".join(f"{e} {self.wg_interface(e)} {TUNNELS[e][0][0]}" for e in EXIT_NAMES),
            f"  DNS authority {DNS_AUTHORITY[0]} {DNS_AUTHORITY[1]} port 53; whoami on every "
            f"lab address, ports {' and '.join(map(str, WHOAMI_PORTS))}",
            f"  e.g. ip netns exec {self.ns('client')} bash",
        ]
        return "\n".join(lines)
