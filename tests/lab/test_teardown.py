"""A lab leaves nothing behind: after a normal exit, an exception, a failed build, and
(through the reaper) a run killed with SIGKILL. These build their own labs, next to the
session's one, which also proves two labs run at once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from iptserver.lab import Lab, LabError, reap_stale_labs
from iptserver.lab.state import STATE_DIR, LabState, is_running, wg_socket

REPO = Path(__file__).resolve().parents[2]


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _assert_gone(state: LabState) -> None:
    assert not set(state.namespaces) & _namespaces()
    assert not [pid for pid, started in state.processes if is_running(pid, started)]
    assert not [i for i in state.wg_interfaces if wg_socket(i).exists()]
    assert not Path(state.workdir).exists()
    assert not (STATE_DIR / f"{state.id}.json").exists()


def _state_of(lab: Lab) -> LabState:
    return LabState.load(STATE_DIR / f"{lab.id}.json")


def test_a_second_lab_runs_beside_the_first_and_leaves_nothing(lab: Lab) -> None:
    other = Lab()
    with pytest.raises(RuntimeError, match="body failed"), other:
        state = _state_of(other)
        assert len(state.processes) == 8  # 6 wireguard-go, 2 servers
        assert set(state.namespaces) <= _namespaces()
        assert other.whoami("client", "198.51.100.10") == "direct"
        raise RuntimeError("body failed")
    _assert_gone(state)
    assert lab.whoami("client", "198.51.100.10") == "direct"  # the session's lab is intact


def test_a_failed_build_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: Lab, node: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Lab, "_configure", interrupted)
    broken = Lab()
    with pytest.raises(KeyboardInterrupt), broken:
        pass
    assert broken.id  # it got as far as claiming an id and spawning processes
    assert not [n for n in _namespaces() if n.startswith(f"ipts{broken.id}-")]
    assert not list(Path(tempfile.gettempdir()).glob(f"iptserver-lab-{broken.id}-*"))
    assert not (STATE_DIR / f"{broken.id}.json").exists()


def test_a_killed_run_is_reaped(lab: Lab) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cli = subprocess.Popen(
        [sys.executable, "-m", "iptserver.lab", "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert cli.stdout is not None
        lines = []
        for line in cli.stdout:
            lines.append(line)
            if line.startswith("up in") or cli.poll() is not None:
                break
        found = re.search(r"\blab ([0-9a-f]{4}) up in", "".join(lines))
        assert found, "".join(lines)
        lab_id = found.group(1)
        path = STATE_DIR / f"{lab_id}.json"
        state = LabState.load(path)
    finally:
        cli.kill()  # no teardown: like a CI job killed mid-run
        cli.wait()
    assert set(state.namespaces) <= _namespaces()
    assert all(is_running(pid, started) for pid, started in state.processes)
    reap_stale_labs()  # (a lab starting in a concurrent test run may have reaped it first)
    _assert_gone(state)
    assert json.loads((STATE_DIR / f"{lab.id}.json").read_text())["id"] == lab.id  # not ours


def test_teardown_is_quick() -> None:
    began = time.monotonic()
    with Lab():
        built = time.monotonic()
    assert time.monotonic() - built < 3, "teardown"
    assert built - began < 10, "build"


def test_a_lab_id_in_use_is_refused(lab: Lab) -> None:
    with pytest.raises(LabError, match="in use"), Lab(lab_id=lab.id):
        pass
