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

This module builds and tears down; what each node is given is in ``node_config`` (pure),
the faults a test injects in ``faults`` and the probes from a node in ``node_probes``,
both offered as ``Lab`` methods so callers need only the lab.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import iptserver
from iptserver.lab import node_config, probes
from iptserver.lab.addresses import (
    CLIENT,
    DNS_AUTHORITY,
    EXIT_NAMES,
    TUNNELS,
    UPLINK,
    UPLINKS,
    WG_PORT,
)
from iptserver.lab.commands import interrupts_deferred, parallel, run_command, tail
from iptserver.lab.errors import CommandError, LabError, ProbeError
from iptserver.lab.faults import Faults
from iptserver.lab.netns import NETNS_DIR
from iptserver.lab.node_config import INGRESS
from iptserver.lab.node_probes import NodeProbes
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
WHOAMI_PORTS = (80, 8080)
STOP_GRACE = 3.0
POLL = 0.01  # seconds between readiness checks


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
        self.faults = Faults(self)
        self.probes = NodeProbes(self)

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

    def check_running(self) -> None:
        """LabError unless the lab is built and not yet torn down."""
        if self._state is None:
            raise LabError("the lab is not running (use `with Lab() as lab:`)")

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
        self.check_running()
        ns = self.ns(node)
        return run_command(
            ["ip", "netns", "exec", ns, *argv],
            f"namespace {ns}",
            check=check,
            input=input,
            timeout=timeout,
        )

    def ip_batch(self, node: str, commands: Sequence[str]) -> None:
        """Several `ip` commands in one process (``ip -n NS -batch -``)."""
        ns = self.ns(node)
        run_command(["ip", "-n", ns, "-batch", "-"], f"namespace {ns}", input="\n".join(commands))

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

    def stop_process(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop one of the lab's processes now (SIGTERM, then SIGKILL after a grace)."""
        stop_children([proc], STOP_GRACE, self._labels.__getitem__)

    def has_link(self, node: str, iface: str) -> bool:
        argv = ["ip", "-n", self.ns(node), "link", "show", "dev", iface]
        return run_command(argv, "", check=False).returncode == 0

    def wireguard_process(self, iface: str) -> subprocess.Popen[bytes] | None:
        """The wireguard-go the lab started for a tunnel interface (None: never started)."""
        return self._wireguard.get(iface)

    def start_tunnel_end(self, exit_name: str) -> None:
        """Start and configure the entry's end of an exit's tunnel, as building does."""
        self._wireguard[self.wg_interface(exit_name)] = self._start_wireguard(exit_name, "entry")
        self._tunnel(exit_name, "entry")

    def _exited(self, proc: subprocess.Popen[bytes], what: str) -> LabError:
        return LabError(
            f"{what}: {self._labels[proc.pid]} exited with {proc.returncode}\n"
            f"log {self._logs[proc.pid]}:\n{tail(self._logs[proc.pid])}"
        )

    # -- faults (faults.Faults) and probes (node_probes.NodeProbes) ----------------------

    def kill_exit(self, exit_name: str) -> None:
        """The exit's uplink drops every packet (``Faults.kill_exit``)."""
        self.faults.kill_exit(exit_name)

    def revive_exit(self, exit_name: str) -> None:
        """Undo ``kill_exit``."""
        self.faults.revive_exit(exit_name)

    def drop_tunnel(self, exit_name: str) -> None:
        """Stop the entry's end of an exit's tunnel (``Faults.drop_tunnel``)."""
        self.faults.drop_tunnel(exit_name)

    def make_tunnel(self, exit_name: str) -> None:
        """Start a dropped tunnel end again, until its handshake (``Faults.make_tunnel``)."""
        self.faults.make_tunnel(exit_name)

    def tunnel_down(self, exit_name: str) -> None:
        """``ip link set down`` the entry's end of a tunnel (``Faults.tunnel_down``)."""
        self.faults.tunnel_down(exit_name)

    def tunnel_up(self, exit_name: str) -> None:
        """Undo ``tunnel_down``."""
        self.faults.tunnel_up(exit_name)

    def socket(
        self, node: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
    ) -> socket.socket:
        """A socket created inside a node's namespace (usable from any thread)."""
        return self.probes.socket(node, family, kind)

    def seen(
        self, node: str, address: str, port: int = 80, *, timeout: float = 3.0
    ) -> dict[str, Any]:
        """What the whoami server at ``address`` reports (``NodeProbes.seen``)."""
        return self.probes.seen(node, address, port, timeout=timeout)

    def whoami(self, node: str, address: str, port: int = 80, *, timeout: float = 3.0) -> str:
        """Which way a connection from ``node`` left (``NodeProbes.whoami``)."""
        return self.probes.whoami(node, address, port, timeout=timeout)

    def hold(
        self, node: str, address: str, seconds: int = 10, *, port: int = 80, timeout: float = 3.0
    ) -> probes.HeldConnection:
        """A connection kept open by the whoami server (``NodeProbes.hold``)."""
        return self.probes.hold(node, address, seconds, port=port, timeout=timeout)

    exit_of = staticmethod(NodeProbes.exit_of)

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
        """A real DNS query from a node (``NodeProbes.query``)."""
        return self.probes.query(
            node, name, rtype, server=server, port=port, tcp=tcp, edns=edns, timeout=timeout
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
        parallel([*(functools.partial(self._make_namespace, n) for n in NODES), self._make_keys])
        servers = self._start_servers()  # Python start-up overlaps with the rest
        for e in EXIT_NAMES:
            for side in ("entry", "exit"):
                self._wireguard[self.wg_interface(e, side)] = self._start_wireguard(e, side)
        self._wire()
        parallel(functools.partial(self._configure, n) for n in NODES)
        # Exits first: an initiation reaching an unconfigured peer is retried only after
        # wireguard-go's 5 s REKEY_TIMEOUT.
        parallel(functools.partial(self._tunnel, e, "exit") for e in EXIT_NAMES)
        parallel(functools.partial(self._tunnel, e, "entry") for e in EXIT_NAMES)
        self._wait_servers(servers)
        self.wait_handshakes()

    def _sysctls(self, node: str) -> dict[str, int]:
        return node_config.sysctls(node, self.rp_filter)

    def _make_namespace(self, node: str) -> None:
        ns = self.ns(node)
        run_command(["ip", "netns", "add", ns], "the root namespace")
        # Before any interface exists, so "default" applies to every veth made later.
        script = node_config.sysctl_script(self._sysctls(node))
        run_command(["ip", "netns", "exec", ns, "sh", "-c", script], f"namespace {ns}")

    def _make_keys(self) -> None:
        def one(iface: str) -> None:
            private = run_command(["wg", "genkey"], "the root namespace").stdout
            path = self.workdir / "keys" / iface
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(private)
            public = run_command(["wg", "pubkey"], "the root namespace", input=private).stdout
            self._pubkeys[iface] = public.strip()

        parallel(functools.partial(one, i) for i in self.wg_interfaces)

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
        for node, commands in node_config.veths({n: self.ns(n) for n in self.nodes}).items():
            self.ip_batch(node, commands)

    def _configure(self, node: str) -> None:
        self.ip_batch(node, node_config.addressing(node))
        if node_config.masquerades(node):
            # Fact: `iptables` is the nf_tables variant here; -w matters for the legacy one.
            for tool in ("iptables", "ip6tables"):
                rule = ["-w", "-t", "nat", "-A", "POSTROUTING", "-o", UPLINK, "-j", "MASQUERADE"]
                self.run(node, [tool, *rule])

    def wait_for(
        self,
        what: str,
        ready: Callable[[], bool],
        procs: Sequence[subprocess.Popen[bytes]] = (),
    ) -> None:
        """Poll ``ready`` until true; LabError with their logs if one of ``procs`` exits or
        ``ready_timeout`` passes."""
        deadline = time.monotonic() + self.ready_timeout
        while not ready():
            for proc in procs:
                if proc.poll() is not None:
                    raise self._exited(proc, f"while waiting for {what}")
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"log {self._logs[p.pid]}:\n{tail(self._logs[p.pid])}" for p in procs
                )
                raise LabError(f"timed out after {self.ready_timeout} s waiting for {what}\n{logs}")
            time.sleep(POLL)

    def _tunnel(self, exit_name: str, side: Literal["entry", "exit"]) -> None:
        iface = self.wg_interface(exit_name, side)
        other = self.wg_interface(exit_name, "exit" if side == "entry" else "entry")
        node = "entry" if side == "entry" else exit_name
        sock = wg_socket(iface)
        self.wait_for(
            f"{sock} (wireguard-go in {self.ns(node)})", sock.exists, [self._wireguard[iface]]
        )
        peer = ["peer", self._pubkeys[other], "allowed-ips", "0.0.0.0/0,::/0"]
        if side == "entry":
            endpoint = UPLINKS[exit_name][0][0]
            peer += ["endpoint", f"{endpoint}:{WG_PORT}", "persistent-keepalive", "1"]
        else:
            peer = ["listen-port", str(WG_PORT), *peer]
        self.run(
            node, ["wg", "set", iface, "private-key", str(self.workdir / "keys" / iface), *peer]
        )
        self.ip_batch(node, node_config.tunnel_addressing(exit_name, side, iface))

    def _wait_servers(self, servers: dict[Path, subprocess.Popen[bytes]]) -> None:
        for ready, proc in servers.items():
            self.wait_for(f"{ready.stem} server in {self.ns('internet')}", ready.exists, [proc])

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
                    f"log {self._logs[p.pid]}:\n{tail(self._logs[p.pid])}"
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
        with interrupts_deferred():
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
