"""FRR (zebra + ospfd, and ospf6d) on a lab node: one FRR instance per namespace, from a config.

Facts found on this machine (FRR 8.4, Debian):
- ``-N NAME`` (pathspace) puts an instance's config in ``/etc/frr/NAME/`` and its vty
  sockets and pid files in ``/var/run/frr/NAME/``; both directories must belong to the
  ``frr`` user, which the daemons drop to. The instance name here is the node's namespace
  name (``ipts<lab id>-<node>``), so labs running at once never share one.
- The daemons run in the foreground (``--log stdout``): their PIDs are the lab's to kill
  and their output lands in the lab's log directory. ``-P 0`` keeps them off TCP vty
  ports. Without ``frrinit.sh`` nothing reads ``frr.conf``: ``vtysh -N NAME -b`` loads it
  into the running daemons, which is what ``frrinit.sh`` does at boot.
- ``vtysh --dryrun -f FILE`` checks a config without any daemon (exit 2 on an error).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from iptserver.lab.errors import LabError
from iptserver.lab.processes import stop_children
from iptserver.render.frr import ZEBRA_NETLINK_BUFFER
from iptserver.schema.values import IPNetwork

if TYPE_CHECKING:
    from iptserver.lab.topology import Lab

_T = TypeVar("_T")

log = logging.getLogger("iptserver.lab")

FRR_BIN = Path("/usr/lib/frr")
CONFIG_ROOT = Path("/etc/frr")
RUN_ROOT = Path("/var/run/frr")
USER = "frr"
DAEMONS = ("zebra", "ospfd")
POLL = 0.02
STOP_GRACE = 5.0


def config_dir(instance: str) -> Path:
    return CONFIG_ROOT / instance


def run_dir(instance: str) -> Path:
    return RUN_ROOT / instance


def remove_instance(instance: str) -> None:
    """Remove an instance's config and run directories (its daemons must be gone)."""
    if not instance or "/" in instance or instance.startswith("."):
        raise LabError(f"not an FRR instance name: {instance!r}")
    for path in (config_dir(instance), run_dir(instance)):
        shutil.rmtree(path, ignore_errors=True)


def dry_run(config: str | Path) -> tuple[bool, str]:
    """Check a config text (or file) with ``vtysh --dryrun``: (valid, what vtysh said)."""
    if isinstance(config, Path):
        path, text = config, None
    else:
        path, text = Path("/dev/stdin"), config
    done = subprocess.run(
        ["vtysh", "--dryrun", "-f", str(path)],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    said = "\n".join(
        line
        for line in (done.stdout + done.stderr).splitlines()
        if "vtysh.conf" not in line  # no vtysh.conf is needed to check a config
    )
    return done.returncode == 0, said


@dataclass(frozen=True, slots=True)
class Neighbor:
    router_id: str
    state: str  # e.g. "Full", "Init", "ExStart"
    interface: str
    address: str


class Frr:
    """One FRR instance on a lab node: ``start()``, look at it, ``stop()``."""

    def __init__(
        self, lab: Lab, node: str, config: str, *, daemons: Sequence[str] = DAEMONS
    ) -> None:
        self.lab = lab
        self.node = node
        self.config = config
        self.daemons = tuple(daemons)
        self.instance = lab.ns(node)
        self._procs: list[subprocess.Popen[bytes]] = []

    # -- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, start the daemons and load the config into them."""
        if self._procs:
            raise LabError(f"FRR {self.instance} is already started")
        remove_instance(self.instance)  # a killed run's leftovers
        self._write_files()
        try:
            for daemon in self.daemons:
                self._procs.append(self.lab.spawn(self.node, self._argv(daemon), name=daemon))
            self._wait_sockets(timeout)
            done = self._vtysh(["-b"], check=False)
            said = _without_noise(done.stdout + done.stderr)
            if done.returncode != 0:
                raise LabError(
                    f"FRR {self.instance}: vtysh -b refused the config ({done.returncode}):\n"
                    f"{said}\n{self.config}"
                )
        except BaseException:
            self.stop()
            raise
        log.debug("FRR %s started: %s", self.instance, " ".join(self.daemons))

    def _write_files(self) -> None:
        for directory in (config_dir(self.instance), run_dir(self.instance)):
            directory.mkdir(mode=0o750, parents=True)
            shutil.chown(directory, USER, USER)
        for name, text in (("frr.conf", self.config), ("vtysh.conf", "")):
            path = config_dir(self.instance) / name
            path.write_text(text, encoding="utf-8")
            path.chmod(0o640)
            shutil.chown(path, USER, USER)

    def _argv(self, daemon: str) -> list[str]:
        return [
            str(FRR_BIN / daemon),
            "-N",
            self.instance,
            "--log",
            "stdout",
            "-u",
            USER,
            "-g",
            USER,
            "-P",
            "0",
            "-i",
            str(run_dir(self.instance) / f"{daemon}.pid"),
            "-f",
            "/dev/null",  # the config comes from frr.conf, through vtysh -b
            # zebra's netlink buffer, as the rendered daemons file sets it: the kernel's
            # default loses route events when a policy table is written at once
            *(("-s", str(ZEBRA_NETLINK_BUFFER)) if daemon == "zebra" else ()),
        ]

    def _wait_sockets(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        sockets = [run_dir(self.instance) / f"{d}.vty" for d in self.daemons]
        while not all(s.exists() for s in sockets):
            for daemon, proc in zip(self.daemons, self._procs, strict=False):
                if proc.poll() is not None:
                    raise LabError(
                        f"FRR {self.instance}: {daemon} exited with {proc.returncode}:\n"
                        f"{self.logs()}"
                    )
            if time.monotonic() > deadline:
                missing = [str(s) for s in sockets if not s.exists()]
                raise LabError(f"FRR {self.instance}: no {', '.join(missing)} after {timeout} s")
            time.sleep(POLL)

    def stop(self) -> None:
        """SIGTERM the daemons (ospfd before zebra), wait, remove the instance's files."""
        stop_children(self._procs, STOP_GRACE, lambda pid: f"FRR {self.instance}")
        self._procs = []
        remove_instance(self.instance)

    @property
    def pids(self) -> list[int]:
        """The daemons' process ids, in start order."""
        return [proc.pid for proc in self._procs]

    @property
    def alive(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    def logs(self) -> str:
        parts = []
        for proc in self._procs:
            with contextlib.suppress(OSError):
                path = self.lab.log_path(proc)
                parts.append(f"log {path}:\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    # -- looking at it ----------------------------------------------------------------

    def _vtysh(
        self, args: Sequence[str], *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = ["vtysh", "-N", self.instance, *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except subprocess.TimeoutExpired as e:
            raise LabError(f"FRR {self.instance}: `{' '.join(argv)}` hung") from e
        if check and done.returncode != 0:
            raise LabError(
                f"FRR {self.instance}: `{' '.join(argv)}` failed ({done.returncode}): "
                f"{_without_noise(done.stdout + done.stderr)}"
            )
        return done

    def show(self, command: str) -> Any:
        """A ``show ... json`` command's answer, parsed."""
        out = self._vtysh(["-c", command]).stdout
        try:
            return json.loads(out)
        except ValueError as e:
            raise LabError(f"FRR {self.instance}: `{command}` gave no JSON: {out[:500]}") from e

    def neighbors(self) -> list[Neighbor]:
        found = []
        answer = self.show("show ip ospf neighbor json")
        for router_id, entries in answer.get("neighbors", {}).items():
            for entry in entries:
                state = entry.get("converged") or entry.get("nbrState", "").split("/")[0]
                interface = entry.get("ifaceName", "").split(":")[0]
                found.append(Neighbor(router_id, state, interface, entry.get("ifaceAddress", "")))
        return sorted(found, key=lambda n: (n.interface, n.router_id))

    def wait_full(self, count: int, timeout: float = 20.0) -> list[Neighbor]:
        """Until ``count`` OSPF neighbours are Full; returns them."""
        last: list[Neighbor] = []

        def full() -> list[Neighbor] | None:
            last[:] = self.neighbors()
            found = [n for n in last if n.state == "Full"]
            return found if len(found) >= count else None

        return self._until(
            full,
            timeout,
            lambda: (
                f"{len([n for n in last if n.state == 'Full'])} of {count} OSPF neighbours "
                f"Full after {timeout} s: {last}"
            ),
        )

    def neighbors6(self) -> list[Neighbor]:
        """OSPFv3 neighbours (``show ipv6 ospf6 neighbor json``)."""
        found = []
        for entry in self.show("show ipv6 ospf6 neighbor json").get("neighbors", []):
            state = entry.get("state", "")
            interface = entry.get("interfaceName", "")
            found.append(Neighbor(entry.get("neighborId", ""), state, interface, ""))
        return sorted(found, key=lambda n: (n.interface, n.router_id))

    def wait_full6(self, count: int, timeout: float = 20.0) -> list[Neighbor]:
        """Until ``count`` OSPFv3 neighbours are Full; returns them."""
        last: list[Neighbor] = []

        def full() -> list[Neighbor] | None:
            last[:] = self.neighbors6()
            found = [n for n in last if n.state == "Full"]
            return found if len(found) >= count else None

        return self._until(
            full, timeout, lambda: f"not {count} OSPFv3 neighbours Full after {timeout} s: {last}"
        )

    def rib(self, version: int = 4) -> dict[str, list[dict[str, Any]]]:
        """``show ip route json`` (``show ipv6 route json`` for version 6): prefix -> the
        routes zebra holds for it."""
        command = "show ip route json" if version == 4 else "show ipv6 route json"
        answer: dict[str, list[dict[str, Any]]] = self.show(command)
        return answer

    def routes(self, protocol: str = "ospf", version: int = 4) -> dict[IPNetwork, list[str]]:
        """The selected routes of ``protocol`` ("ospf6" for OSPFv3): prefix -> next-hop
        interfaces."""
        found: dict[IPNetwork, list[str]] = {}
        for prefix, entries in self.rib(version).items():
            for entry in entries:
                if entry.get("protocol") == protocol and entry.get("selected"):
                    hops = [h.get("interfaceName", "") for h in entry.get("nexthops", [])]
                    found[ipaddress.ip_network(prefix)] = hops
        return found

    def wait_route(self, prefix: str, protocol: str = "ospf", timeout: float = 20.0) -> list[str]:
        """Until zebra has selected a ``protocol`` route to ``prefix`` (an IPv6 prefix:
        an "ospf6" route unless told otherwise); its interfaces."""
        wanted = ipaddress.ip_network(prefix)
        if wanted.version == 6 and protocol == "ospf":
            protocol = "ospf6"
        return self._until(
            lambda: self.routes(protocol, wanted.version).get(wanted),
            timeout,
            lambda: f"no {protocol} route to {prefix} in {timeout} s",
        )

    def _until(self, found: Callable[[], _T | None], timeout: float, why: Callable[[], str]) -> _T:
        """Poll ``found`` until it gives a value; fail at once if FRR dies, else at timeout
        with ``why()`` (OSPF state is polled: zebra and ospfd send no event we can await)."""
        deadline = time.monotonic() + timeout
        while True:
            value = found()
            if value is not None:
                return value
            if not self.alive:
                raise LabError(f"FRR {self.instance} died:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise LabError(f"FRR {self.instance}: {why()}")
            time.sleep(0.1)


def _without_noise(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "vtysh.conf" not in line).strip()
