"""Throwaway network namespaces with real wireguard-go, for checking rendered configs.

Names carry a random token: wireguard-go's control sockets are host-wide, and other
tests may run at the same time. Everything made here is removed on exit, also when a
test fails: processes by PID, then the namespaces (their veths and tunnels go with them).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

WG_SOCKETS = Path("/var/run/wireguard")
POLL = 0.05
WAIT = 10.0

# wg-quick's userspace fallback: wireguard-go in the foreground, sent to the background so
# that its PID is ours to note (and to kill), then wait for its control socket.
_USERSPACE = """#!/bin/sh
wireguard-go -f "$1" >>"{dir}/$1.log" 2>&1 &
echo $! >>"{dir}/pids"
i=0
while [ ! -S "{sockets}/$1.sock" ]; do
    i=$((i+1)); [ "$i" -gt 200 ] && exit 1
    sleep 0.05
done
"""


class Namespaces:
    """``with Namespaces(tmp_path, "a", "b") as net: net.run("a", [...])``."""

    def __init__(self, workdir: Path, *nodes: str) -> None:
        self.token = secrets.token_hex(3)
        self.workdir = workdir
        self.names = {node: f"iptr{self.token}-{node}" for node in nodes}
        self.userspace = workdir / "wireguard-go-for-tests"
        self.userspace.write_text(_USERSPACE.format(dir=workdir, sockets=WG_SOCKETS))
        self.userspace.chmod(0o755)
        self._procs: list[subprocess.Popen[bytes]] = []

    def interface(self, label: str) -> str:
        """A WireGuard interface name no other test uses (15 characters at most)."""
        return f"rw{self.token}{label}"[:15]

    def __enter__(self) -> Namespaces:
        try:
            for name in self.names.values():
                _check(["ip", "netns", "add", name])
                _check(["ip", "-n", name, "link", "set", "lo", "up"])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self, node: str, argv: Sequence[str], *, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return _check(["ip", "netns", "exec", self.names[node], *argv], env=env)

    def veth(self, a: str, a_name: str, b: str, b_name: str) -> None:
        """A veth pair made inside ``a``'s namespace, one end moved to ``b``'s."""
        self.run(a, ["ip", "link", "add", a_name, "type", "veth", "peer", "name", b_name,
                     "netns", self.names[b]])  # fmt: skip

    def wireguard_go(self, node: str, interface: str) -> None:
        """A bare wireguard-go interface in ``node`` (for `wg setconf`)."""
        log = (self.workdir / f"{interface}.log").open("ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.names[node], "wireguard-go", "-f", interface],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self._procs.append(proc)
        deadline = time.monotonic() + WAIT
        while not (WG_SOCKETS / f"{interface}.sock").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"wireguard-go {interface} did not start: {self.log(interface)}"
                )
            time.sleep(POLL)

    def wg_quick(self, node: str, action: str, conf: Path) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "WG_QUICK_USERSPACE_IMPLEMENTATION": str(self.userspace)}
        return self.run(node, ["wg-quick", action, str(conf)], env=env)

    def log(self, interface: str) -> str:
        path = self.workdir / f"{interface}.log"
        return path.read_text(errors="replace") if path.exists() else "(no log)"

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        pids = self.workdir / "pids"
        if pids.exists():
            for pid in map(int, pids.read_text().split()):
                _stop(pid)
        for name in self.names.values():
            if (Path("/run/netns") / name).exists():
                subprocess.run(["ip", "netns", "delete", name], check=False)


def _stop(pid: int) -> None:
    """SIGTERM a wireguard-go that is not our child, and wait until it is gone."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "wireguard-go":
            return  # gone already, and the PID taken by someone else
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError):
        return
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(POLL)
    if Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _check(
    argv: Sequence[str], *, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, env=env, input=input)
    if done.returncode:
        raise AssertionError(
            f"`{' '.join(argv)}` exited {done.returncode}\nstdout: {done.stdout}\n"
            f"stderr: {done.stderr}"
        )
    return done
