"""The recursor plugin from an installed wheel, not the work tree: a real ``pdns_recursor``
loads what ``iptserver render recursor`` of that install points it at.

How, offline and in seconds: the package (``pyproject.toml``, ``README.md``, ``iptserver/``)
is copied to a temporary directory so the build leaves nothing in the work tree, and
``pip wheel --no-deps`` builds it there (its build backend comes from the package index pip
is already configured with). The wheel goes into a fresh venv made ``--without-pip`` whose
one ``.pth`` line puts the main venv's site-packages after its own, so the dependencies are
found there while ``iptserver`` itself can only come from the wheel (that line does not run
the main venv's editable-install hook). The zipped case puts the wheel itself on
``PYTHONPATH`` (a pure wheel is an importable zip), where the plugin has no file of its own.

The recursor listens on a free loopback port with its files in a temporary directory; the
rendered settings point the plugin, fail-closed, at a port nobody listens on, so an answer
with addresses comes back SERVFAIL and the plugin says why: that proves it ran. An answer
without addresses (a PTR) is left alone. Processes are stopped by PID.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

PROJECT = Path(__file__).resolve().parents[2]
PLUGIN_IN_WHEEL = "iptserver/recursor_plugin/iptserver.lua"
START_TIMEOUT = 15.0
PYTHON = f"python{sys.version_info.major}.{sys.version_info.minor}"


def run(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run, fail with what it said, return its stdout."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, cwd=cwd)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the package."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        (src / name).write_bytes((PROJECT / name).read_bytes())
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PROJECT / "iptserver", src / "iptserver", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)])
    (built,) = out.glob("iptserver-*.whl")
    return built


def free_port() -> int:
    """A loopback port free for both UDP and TCP right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


@dataclass
class Recursor:
    """A started ``pdns_recursor``, on 127.0.0.1:``port``."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def query(self, name: str, qtype: str) -> DNSRecord:
        answer = DNSRecord.question(name, qtype).send("127.0.0.1", self.port, timeout=5)
        return DNSRecord.parse(answer)


@pytest.fixture
def start_recursor(tmp_path: Path) -> Iterator[Callable[[Path], Recursor]]:
    """Start ``pdns_recursor`` on an include dir; stop every one started, by PID."""
    started: list[subprocess.Popen[bytes]] = []

    def start(include: Path) -> Recursor:
        config = tmp_path / "recursor"
        config.mkdir()
        port = free_port()
        (config / "recursor.conf").write_text(
            f"local-address=127.0.0.1\nlocal-port={port}\nsocket-dir={config}\n"
            "daemon=no\nwrite-pid=no\ndisable-syslog=yes\nsecurity-poll-suffix=\n"
            f"dnssec=off\ninclude-dir={include}\n",
            encoding="utf-8",
        )
        log_path = config / "log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                ["pdns_recursor", f"--config-dir={config}"], stdout=log, stderr=log
            )
        started.append(proc)
        recursor = Recursor(proc, port, log_path)
        deadline = time.monotonic() + START_TIMEOUT
        ping = ["rec_control", f"--socket-dir={config}", "--timeout=1", "ping"]
        while True:
            assert proc.poll() is None, f"exited {proc.returncode}:\n{recursor.log}"
            done = subprocess.run(ping, capture_output=True, text=True, check=False)
            if done.returncode == 0 and "pong" in done.stdout:
                return recursor
            assert time.monotonic() < deadline, f"no pong:\n{recursor.log}"
            time.sleep(0.1)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def installed(wheel: Path, venv: Path) -> Path:
    """A fresh venv holding only the wheel; the dependencies come from the main venv."""
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    site = venv / "lib" / PYTHON / "site-packages"
    main_site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "main-venv-deps.pth").write_text(main_site + "\n", encoding="utf-8")
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)])
    return site


def render_argv(out: Path) -> list[str]:
    api = f"127.0.0.1:{free_port()}"  # nobody listens: the plugin, fail-closed, SERVFAILs
    return ["render", "recursor", "--fail-closed", "--api", api, "--out-dir", str(out)]


def dofile_path(out: Path) -> Path:
    match = re.search(r'^dofile\("(.*)"\)$', (out / "iptserver-settings.lua").read_text(), re.M)
    assert match is not None
    return Path(match.group(1))


def assert_plugin_runs(recursor: Recursor) -> None:
    """The plugin was loaded, and it is what handles answers with addresses."""
    ptr = recursor.query("1.0.0.127.in-addr.arpa", "PTR")
    assert RCODE[ptr.header.rcode] == "NOERROR" and ptr.rr[0].rtype == QTYPE.PTR
    assert RCODE[recursor.query("localhost", "A").header.rcode] == "SERVFAIL"
    assert "Failed to load Lua script" not in recursor.log
    assert "iptserver: localhost. not routed" in recursor.log, recursor.log


def test_the_wheel_ships_the_plugin(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as built:
        shipped = built.read(PLUGIN_IN_WHEEL)
    assert shipped == (PROJECT / PLUGIN_IN_WHEEL).read_bytes()


def test_an_installed_wheel_points_the_recursor_at_its_own_plugin(
    wheel: Path, tmp_path: Path, start_recursor: Callable[[Path], Recursor]
) -> None:
    site = installed(wheel, tmp_path / "venv")
    out = tmp_path / "recursor.d"
    run([str(tmp_path / "venv" / "bin" / "iptserver"), *render_argv(out)], cwd=tmp_path)
    plugin = dofile_path(out)
    assert plugin == site / PLUGIN_IN_WHEEL
    assert plugin.read_bytes() == (PROJECT / PLUGIN_IN_WHEEL).read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["iptserver-settings.lua", "iptserver.conf"]
    assert_plugin_runs(start_recursor(out))


def test_a_zipped_install_renders_the_plugin_next_to_the_settings(
    wheel: Path, tmp_path: Path, start_recursor: Callable[[Path], Recursor]
) -> None:
    out = tmp_path / "recursor.d"
    env = {**os.environ, "PYTHONPATH": str(wheel)}
    check = "import iptserver; print(iptserver.__file__)"
    assert run([sys.executable, "-c", check], env=env, cwd=tmp_path).startswith(str(wheel))
    run([sys.executable, "-m", "iptserver", *render_argv(out)], env=env, cwd=tmp_path)
    assert dofile_path(out) == out.resolve() / "iptserver.lua"
    assert (out / "iptserver.lua").read_bytes() == (PROJECT / PLUGIN_IN_WHEEL).read_bytes()
    assert_plugin_runs(start_recursor(out))
