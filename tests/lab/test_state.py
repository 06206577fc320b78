"""A lab's state file: written and read back, processes told apart by their start time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from iptserver.lab.state import LabState, is_running, reap_stale_labs, start_time, wg_socket


def _state(**changes: object) -> LabState:
    values: dict[str, object] = {
        "id": "beef",
        "owner_pid": os.getpid(),
        "owner_start": start_time(os.getpid()),
        "namespaces": ["ipts" + "beef-entry"],
        "wg_interfaces": ["wgbeefuk"],
        "workdir": "/nonexistent/iptserver-lab-beef-x",
        "processes": [(1, 2)],
    }
    return LabState(**(values | changes))  # type: ignore[arg-type]


def test_state_round_trips_through_its_file(tmp_path: Path) -> None:
    state = _state()
    state.save(tmp_path / "labs")
    assert state.path(tmp_path / "labs") == tmp_path / "labs" / "beef.json"
    assert LabState.load(state.path(tmp_path / "labs")) == state


def test_a_process_is_known_by_pid_and_start_time() -> None:
    started = start_time(os.getpid())
    assert started is not None and is_running(os.getpid(), started)
    assert not is_running(os.getpid(), started + 1)
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert start_time(int(done.stdout)) is None


def test_a_living_owners_lab_is_not_reaped(tmp_path: Path) -> None:
    _state().save(tmp_path)
    assert _state().owner_alive()
    assert reap_stale_labs(tmp_path) == []
    assert (tmp_path / "beef.json").exists()


def test_unreadable_state_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "junk.json").write_text("{not json")
    assert reap_stale_labs(tmp_path) == []


def test_wireguard_sockets_live_where_wireguard_go_puts_them() -> None:
    assert wg_socket("wgbeefuk") == Path("/var/run/wireguard/wgbeefuk.sock")
