"""A private dockerd for the compose tests, and the sidecar image built without a registry.

The dockerd runs in a network namespace the test creates, in a mount namespace of its own
(with that namespace's sysfs, and the host's cgroup hierarchies moved under it), with its
own data root, exec root and socket, and without bridges or iptables rules: nothing it
does reaches the root namespace. Images come from local files only: a Debian rootfs
assembled by debootstrap from the machine's Debian mirror (cached under CACHE) is imported
as the base image, and the project's wheels are put in the build context.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"  # Debian's client (/usr/local/bin/docker is another one)
COMPOSE = "/usr/bin/docker-compose"
PROJECT = Path(__file__).resolve().parents[2]
ARTIFACTS = PROJECT / "artifacts"
IMAGE = "iptserver-sidecar:test"  # the image the tests build (sidecars and tunnels)
DOCKERFILE = PROJECT / "compose" / "Dockerfile"
CACHE = Path("/var/cache/iptserver/compose")
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
ROOTFS_EXTRA = ("python3", "python3-venv")  # what python:3.11-slim-bookworm brings
NETNS_PREFIX = "iptdock-"  # + the pid of the test process that made it
WORKDIR_PREFIX = "iptserver-dockerd-"  # under /var/tmp, + the pid too
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
HEALTHY_TIMEOUT = 120.0  # health checks run every 10 s; give them a few rounds

# Mount namespace set-up before dockerd starts: this netns's sysfs (so dockerd sees its
# own links), with the host's cgroup hierarchies carried over (`ip netns exec` would hide
# them, and dockerd refuses to start without the devices cgroup).
_NAMESPACE_SETUP = (
    'keep=$(mktemp -d); mount --rbind /sys/fs/cgroup "$keep"; '
    'mount -t sysfs sysfs /sys; mount --move "$keep" /sys/fs/cgroup; rmdir "$keep"; '
    'exec "$@"'
)


class HarnessError(Exception):
    pass


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run a command; its stdout, or an error with everything it said."""
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise HarnessError(
            f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


@dataclass
class Dockerd:
    """A running dockerd: ``env`` points docker and docker-compose at it."""

    netns: str
    workdir: Path
    proc: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.workdir / "docker.sock"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "0"}

    @property
    def log(self) -> str:
        return (self.workdir / "dockerd.log").read_text(errors="replace")

    def docker(self, *args: str, timeout: float = 600) -> str:
        return run([DOCKER, *args], env=self.env, timeout=timeout)


def start_dockerd(workdir: Path) -> Dockerd:
    """dockerd in a new network namespace; return once it answers."""
    netns = f"{NETNS_PREFIX}{os.getpid()}-{int(time.monotonic() * 1000) % 100000}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    argv = [
        "nsenter",
        f"--net=/run/netns/{netns}",
        "unshare",
        "--mount",
        "--propagation",
        "slave",
        "sh",
        "-ec",
        _NAMESPACE_SETUP,
        "sh",
        DOCKERD,
        f"--data-root={workdir / 'data'}",
        f"--exec-root={workdir / 'exec'}",
        f"--pidfile={workdir / 'dockerd.pid'}",
        f"--host=unix://{workdir / 'docker.sock'}",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-masq=false",
        "--bridge=none",
        "--userland-proxy=false",
        f"--cgroup-parent=/{netns}",  # so what outlives dockerd can be found and killed
    ]
    with (workdir / "dockerd.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    dockerd = Dockerd(netns, workdir, proc)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            stop_dockerd(dockerd)
            raise HarnessError(f"dockerd exited with {proc.returncode}:\n{dockerd.log}")
        if dockerd.socket.exists():
            with contextlib.suppress(HarnessError):
                dockerd.docker("version", timeout=10)
                return dockerd
        if time.monotonic() > deadline:
            stop_dockerd(dockerd)
            raise HarnessError(f"dockerd did not answer in {START_TIMEOUT} s:\n{dockerd.log}")
        time.sleep(0.2)


def stop_dockerd(dockerd: Dockerd) -> list[str]:
    """Remove every container, stop dockerd by PID, kill what is left in its namespace,
    delete the namespace. Returns what had to be forced (empty: a clean stop)."""
    forced: list[str] = []
    if dockerd.proc.poll() is None and dockerd.socket.exists():
        with contextlib.suppress(HarnessError, subprocess.TimeoutExpired):
            ids = dockerd.docker("ps", "-aq", timeout=30).split()
            if ids:
                dockerd.docker("rm", "-f", "-v", *ids, timeout=120)
    if dockerd.proc.poll() is None:
        dockerd.proc.send_signal(signal.SIGTERM)
        try:
            dockerd.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            forced.append(f"dockerd {dockerd.proc.pid} ignored SIGTERM")
            dockerd.proc.kill()
            dockerd.proc.wait()
    forced += [f"process {pid} left behind" for pid in _kill_namespace(dockerd.netns)]
    return forced


def _cgroups(parent: str) -> list[Path]:
    """The container cgroups under ``parent`` (dockerd's --cgroup-parent), in every
    hierarchy (cgroup v1: one per controller; v2: one), deepest first."""
    root = Path("/sys/fs/cgroup")
    tops = [root / parent, *(hierarchy / parent for hierarchy in root.iterdir())]
    found = [d for top in tops if top.is_dir() for d in (top, *top.rglob("*")) if d.is_dir()]
    return sorted(set(found), key=lambda d: len(d.parts), reverse=True)


def _kill_namespace(netns: str) -> list[int]:
    """SIGKILL every process left in the namespace (containerd shims) or in the containers'
    cgroups (container processes live in namespaces of their own), then remove the
    cgroups and the namespace. Returns the PIDs killed."""
    listed = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    pids = {int(pid) for pid in listed.stdout.split()}
    groups = _cgroups(netns)
    for group in groups:
        with contextlib.suppress(OSError):
            pids |= {int(pid) for pid in (group / "cgroup.procs").read_text().split()}
    for pid in sorted(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT
    for group in groups:  # a cgroup can be removed once its processes are gone
        while group.exists():
            try:
                group.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
    subprocess.run(["ip", "netns", "del", netns], check=False)
    return sorted(pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale_dockerds() -> list[str]:
    """Remove what a killed test run left: its namespaces (and every process in them) and
    its work directories, found by the pid in their names. Returns what was removed."""
    reaped = []
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        owner = name.removeprefix(NETNS_PREFIX).split("-")[0]
        if not name.startswith(NETNS_PREFIX) or not owner.isdigit() or _alive(int(owner)):
            continue
        _kill_namespace(name)
        reaped.append(name)
    for workdir in Path("/var/tmp").glob(f"{WORKDIR_PREFIX}*"):
        owner = workdir.name.removeprefix(WORKDIR_PREFIX).split("-")[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(workdir, ignore_errors=True)
            reaped.append(str(workdir))
    return reaped


def rootfs_packages() -> list[str]:
    """The Dockerfile's PACKAGES, and Python: the base the Dockerfile expects."""
    match = re.search(r'^ARG PACKAGES="([^"]+)"', DOCKERFILE.read_text(), re.MULTILINE)
    if match is None:
        raise HarnessError(f'{DOCKERFILE}: no ARG PACKAGES="..." line')
    return sorted({*match.group(1).split(), *ROOTFS_EXTRA})


def rootfs_tarball() -> tuple[Path, float | None]:
    """The base rootfs as a tar file, built by debootstrap on first use and cached.

    Returns the path and how long building it took (None: it was in the cache).
    """
    packages = rootfs_packages()
    key = hashlib.sha256(" ".join([SUITE, MIRROR, *packages]).encode()).hexdigest()[:12]
    tarball = CACHE / f"rootfs-{SUITE}-{key}.tar"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "rootfs.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others reuse it
        if tarball.exists():
            return tarball, None
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as tmp:
            root = Path(tmp) / "root"
            argv = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}"]
            run([*argv, SUITE, str(root), MIRROR], timeout=1800)
            shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
            partial = Path(tmp) / "rootfs.tar"
            run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."])
            partial.rename(tarball)
        return tarball, time.monotonic() - started


def build_context(dest: Path) -> Path:
    """What `docker build` gets: the package, the plugin, compose/, and every wheel."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(PROJECT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "wheels")
    for name in ("iptserver", "compose"):
        shutil.copytree(PROJECT / name, dest / name, ignore=ignore)
    wheels = dest / "compose" / "wheels"
    wheels.mkdir()
    run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels), str(dest)])
    return dest


def build_image(dockerd: Dockerd, tarball: Path, context: Path, tag: str) -> None:
    """Import the rootfs as the base image, then build the sidecar image on it offline."""
    base = f"iptserver-test-base:{tarball.stem}"
    dockerd.docker("import", str(tarball), base)
    dockerd.docker(
        "build",
        "--network=none",
        "--build-arg",
        f"BASE={base}",
        "-t",
        tag,
        "-f",
        str(context / "compose" / "Dockerfile"),
        str(context),
        timeout=1200,
    )


@dataclass
class Stack:
    """A compose project on the private dockerd: its files, in the order compose merges them."""

    dockerd: Dockerd
    files: list[Path]
    project: str

    def compose(self, *args: str, timeout: float = 300) -> str:
        argv = [COMPOSE, "-p", self.project]
        for path in self.files:
            argv += ["-f", str(path)]
        return run([*argv, *args], env=self.dockerd.env, timeout=timeout)

    def exec(self, service: str, *argv: str) -> str:
        return self.compose("exec", "-T", service, *argv, timeout=60)

    def status(self, service: str, *argv: str) -> tuple[int, str]:
        """Run a command in a service: its exit code and what it printed."""
        command = [COMPOSE, "-p", self.project]
        for path in self.files:
            command += ["-f", str(path)]
        proc = subprocess.run(
            [*command, "exec", "-T", service, *argv],
            env=self.dockerd.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return proc.returncode, proc.stdout + proc.stderr

    def health(self, service: str) -> str:
        container = f"{self.project}_{service}_1"
        found: str = json.loads(
            self.dockerd.docker("inspect", "--format", "{{json .State.Health}}", container)
        )["Status"]
        return found


def wait_healthy(stack: Stack, services: tuple[str, ...]) -> None:
    """Wait until every one of ``services`` passes its health check."""
    deadline = time.monotonic() + HEALTHY_TIMEOUT
    while True:
        states = {service: stack.health(service) for service in services}
        if all(state == "healthy" for state in states.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not healthy after {HEALTHY_TIMEOUT} s: {states}")
        time.sleep(1)
