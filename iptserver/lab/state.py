"""What a running lab owns, on disk, so a lab left behind by a killed run can be reaped.

A lab writes ``/run/iptserver-lab/<id>.json`` before it creates anything and updates it
as it starts processes. A lab whose owner process is gone (SIGKILL, a crashed CI job) is
reaped by the next lab that starts (``reap_stale_labs``): its processes are killed by
PID, its namespaces deleted, its WireGuard sockets, FRR instance directories and work
directory removed.

Processes are identified by PID *and* start time (``/proc/PID/stat`` field 22), so a
PID the kernel reused for an unrelated process is never killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from iptserver.lab.frr import remove_instance

log = logging.getLogger("iptserver.lab")

STATE_DIR = Path("/run/iptserver-lab")
# Fact: wireguard-go keeps its control sockets here for every namespace of the host.
WG_SOCKET_DIR = Path("/var/run/wireguard")
NS_PREFIX = "ipts"  # a lab's namespaces are ipts<id>-<node>
WORKDIR_PREFIX = "iptserver-lab-"
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited already; only its parent's wait is missing
        return None
    return int(fields[19])


def is_running(pid: int, started: int) -> bool:
    return start_time(pid) == started


def wg_socket(interface: str) -> Path:
    return WG_SOCKET_DIR / f"{interface}.sock"


@dataclass
class LabState:
    id: str
    owner_pid: int
    owner_start: int
    namespaces: list[str]
    wg_interfaces: list[str]
    workdir: str
    processes: list[tuple[int, int]] = field(default_factory=list)  # (pid, start time)

    def path(self, state_dir: Path) -> Path:
        return state_dir / f"{self.id}.json"

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=f".{self.id}.")
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(self), out, indent=1)
        os.replace(tmp, self.path(state_dir))

    @classmethod
    def load(cls, path: Path) -> LabState:
        data = json.loads(path.read_text())
        data["processes"] = [tuple(p) for p in data.get("processes", [])]
        return cls(**data)

    def owner_alive(self) -> bool:
        return is_running(self.owner_pid, self.owner_start)


def stop_processes(processes: list[tuple[int, int]], grace: float = STOP_GRACE) -> None:
    """SIGTERM, wait up to ``grace`` seconds, SIGKILL. Only processes we can identify."""
    living = [(pid, started) for pid, started in processes if is_running(pid, started)]
    for pid, _ in living:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while living and time.monotonic() < deadline:
        time.sleep(0.02)
        living = [(pid, started) for pid, started in living if is_running(pid, started)]
    for pid, _ in living:
        log.warning("process %d ignored SIGTERM for %.0f s: SIGKILL", pid, grace)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remove_namespaces(lab_id: str, namespaces: list[str]) -> list[str]:
    """Delete the lab's namespaces (their veths go with them). Returns what went wrong."""
    problems = []
    for name in namespaces:
        if not name.startswith(f"{NS_PREFIX}{lab_id}-"):
            problems.append(f"not deleting namespace {name}: not one of lab {lab_id}'s")
            continue
        if not (Path("/run/netns") / name).exists():
            continue
        done = subprocess.run(["ip", "netns", "delete", name], capture_output=True, text=True)
        if done.returncode:
            problems.append(f"ip netns delete {name}: {done.stderr.strip()}")
    return problems


def remove_files(state: LabState) -> None:
    for interface in state.wg_interfaces:  # left behind when wireguard-go is SIGKILLed
        with contextlib.suppress(FileNotFoundError):
            wg_socket(interface).unlink()
    for namespace in state.namespaces:  # FRR instances are named after their namespace
        if namespace.startswith(f"{NS_PREFIX}{state.id}-"):
            remove_instance(namespace)
    workdir = Path(state.workdir)
    if workdir.name.startswith(WORKDIR_PREFIX):
        shutil.rmtree(workdir, ignore_errors=True)


def destroy(state: LabState, state_dir: Path) -> list[str]:
    """Remove everything the state file names; the state file last."""
    stop_processes(state.processes)
    problems = remove_namespaces(state.id, state.namespaces)
    remove_files(state)
    if not problems:
        with contextlib.suppress(FileNotFoundError):
            state.path(state_dir).unlink()
    return problems


def reap_stale_labs(state_dir: Path = STATE_DIR) -> list[str]:
    """Tear down every lab whose owner process is gone. Returns the reaped lab ids."""
    reaped = []
    for path in sorted(state_dir.glob("*.json")) if state_dir.is_dir() else []:
        try:
            state = LabState.load(path)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring unreadable lab state %s: %s", path, exc)
            continue
        if state.owner_alive():
            continue
        log.warning(
            "reaping lab %s left by dead process %d: namespaces %s",
            state.id,
            state.owner_pid,
            " ".join(state.namespaces),
        )
        for problem in destroy(state, state_dir):
            log.warning("lab %s: %s", state.id, problem)
        reaped.append(state.id)
    return reaped
