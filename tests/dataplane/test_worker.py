"""The dataplane seen from the event loop (KernelWorker) against the real kernel.

``worker_driver`` runs in the test's namespace (as the daemon runs in its own): it opens a
worker, applies a plan, learns an entry on the caller's thread (``learn_now``) and one
through ``learn``, reads them back and closes, with or without keeping the kernel state.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import REPO
from tests.dataplane.conftest import ipset_restore

SCHEMA = """
exits:
  uk: {interface: xuk}
  ru: {interface: xru}
default: uk
ingress: [ing0]
rules:
  - {exit: ru, nets: [198.51.100.0/24], countries: [RU]}
"""
EXPORTING = SCHEMA + "kernel: {export_table: 200}\n"
UK, RU = 0x100, 0x101
LEARNED_SETS = {"ipts-d0-4", "ipts-d0-6"}


def drive(netns: str, schema: Path, state_file: Path, end: str, *more: str) -> dict[str, Any]:
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.dataplane.worker_driver"]
    done = subprocess.run(
        [*argv, str(schema), str(state_file), end, *more],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def sh(netns: str, *argv: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, check=True
    ).stdout


def learned(result: dict[str, Any], key: str = "learned") -> dict[str, tuple[int, int]]:
    """stream_learned as network -> (weight, mark), with each timeout and set checked."""
    for _, set_name, net, _, timeout in result[key]:
        assert 250 < timeout <= 300
        assert set_name == ("ipts-d0-6" if ":" in net else "ipts-d0-4")
    return {net: (weight, mark) for weight, _, net, mark, _ in result[key]}


def test_learning_when_idle_is_written_at_once(
    netns: str, tmp_path: Path, write_schema: Callable[[str], Path]
) -> None:
    result = drive(netns, write_schema(SCHEMA), tmp_path / "exits.json", "remove")
    assert result["exits_before"] == []
    assert result["problems"] == []
    assert result["learn_now"] is True  # idle, no export table: written on the caller's thread
    assert result["exported"] == []
    assert learned(result) == {"203.0.113.7/32": (0, UK), "2001:db8::7/128": (0, RU)}
    assert learned(result, "learned_covering") == {"203.0.113.7/32": (0, UK)}
    assert learned(result, "learned_by_ru") == {"2001:db8::7/128": (0, RU)}
    sizes = result["set_sizes"]
    assert {name: sizes[name] for name in LEARNED_SETS} == {"ipts-d0-4": 1, "ipts-d0-6": 1}
    assert sizes["ipts-n0-4"] == 1  # 198.51.100.0/24 (no country networks given)
    assert sizes["ipts-private-4"] > 0
    assert set(sizes) == {
        f"ipts-{kind}-{family}" for kind in ("private", "d0", "n0") for family in (4, 6)
    }


def test_with_an_export_table_learning_goes_through_the_kernel_thread(
    netns: str, tmp_path: Path, write_schema: Callable[[str], Path]
) -> None:
    result = drive(netns, write_schema(EXPORTING), tmp_path / "exits.json", "keep")
    assert result["learn_now"] is False  # the host route needs pyroute2: not here
    assert result["exported"] == ["2001:db8::7/128"]  # learn exports what learn_now did not
    assert learned(result) == {"2001:db8::7/128": (0, RU)}
    routes = sh(netns, "ip", "-6", "route", "show", "table", "200")
    assert "2001:db8::7 dev xru proto 157" in routes


def test_learning_while_the_kernel_thread_applies_a_plan_does_not_wait_for_it(
    netns: str, tmp_path: Path, write_schema: Callable[[str], Path]
) -> None:
    """A reload's apply holds the kernel thread for a while: an answer's entry is
    written on the caller's thread meanwhile (its own socket), and is in the kernel."""
    result = drive(netns, write_schema(SCHEMA), tmp_path / "exits.json", "remove", "busy")
    assert result["written_while_applying"] is True
    assert result["apply_was_done"] is False
    assert learned(result)["203.0.113.8/32"] == (0, UK)
    assert result["set_sizes"]["ipts-n0-4"] > 50_000  # the big plan went in


def test_close_removes_the_kernel_state(
    netns: str, tmp_path: Path, write_schema: Callable[[str], Path]
) -> None:
    state_file = tmp_path / "state" / "exits.json"
    drive(netns, write_schema(SCHEMA), state_file, "remove")
    assert "ipts-" not in sh(netns, "ipset", "list", "-n")
    assert "fwmark" not in sh(netns, "ip", "rule") + sh(netns, "ip", "-6", "rule")
    assert "IPTSERVER" not in sh(netns, "iptables-legacy-save", "-t", "mangle")
    assert sh(netns, "ip", "route", "show", "table", "100") == ""
    assert not state_file.exists()


def test_close_with_keep_state_leaves_it_for_the_next_run(
    netns: str, tmp_path: Path, write_schema: Callable[[str], Path]
) -> None:
    schema, state_file = write_schema(SCHEMA), tmp_path / "state" / "exits.json"
    drive(netns, schema, state_file, "keep")
    assert set(sh(netns, "ipset", "list", "-n").split()) >= LEARNED_SETS
    assert "fwmark 0x100 lookup 100" in sh(netns, "ip", "rule")
    assert "-A PREROUTING -i ing0 -j IPTSERVER" in sh(netns, "iptables-legacy-save", "-t", "mangle")
    assert "default dev xuk" in sh(netns, "ip", "route", "show", "table", "100")
    saved = json.loads(state_file.read_text())
    assert [(e["name"], e["mark"]) for e in saved] == [("uk", UK), ("ru", RU)]
    kept = sh(netns, "ipset", "save", "ipts-d0-4")
    assert "add ipts-d0-4 203.0.113.7 timeout" in kept

    # the next run adopts the exits and the learned entries, then removes it all
    again = drive(netns, schema, state_file, "remove")
    assert again["exits_before"] == ["uk", "ru"]
    assert learned(again) == {"203.0.113.7/32": (0, UK), "2001:db8::7/128": (0, RU)}
    assert "ipts-" not in sh(netns, "ipset", "list", "-n")
    assert not state_file.exists()


def test_listing_a_large_learned_set_does_not_hold_up_answers_writes(
    netns: str, tmp_path: Path, write_schema: Callable[[str], Path]
) -> None:
    """/v1/routes lists the learned sets: a child process reads them, so an answer's
    write goes in at once meanwhile (on the caller's thread: nothing holds the lock)."""
    result = drive(netns, write_schema(SCHEMA), tmp_path / "exits.json", "remove", "listing")
    assert result["listing_was_done"] is False  # the write below came during the listing
    assert result["written_while_listing"] is True
    assert result["listed"] >= 100_000
    assert learned(result)["203.0.113.9/32"] == (0, UK)


LEFT_BY_A_KILLED_RUN = [
    "create ipts-d0-4 hash:net family inet timeout 0 skbinfo",
    "create ipts-d0-6 hash:net family inet6 timeout 0 skbinfo",
    f"add ipts-d0-4 203.0.113.50 timeout 280 skbmark {UK:#x}",
    f"add ipts-d0-4 203.0.113.51 timeout 280 skbmark {RU:#x}",
    "add ipts-d0-4 203.0.113.52 timeout 280 skbmark 0x1ff",  # an exit this schema lacks
    "add ipts-d0-6 2001:db8::52 timeout 280 skbmark 0x1ff",
]


def test_a_start_drops_entries_of_exits_that_are_gone_after_it_applied(
    netns: str, tmp_path: Path, write_schema: Callable[[str], Path]
) -> None:
    """Without a state file nobody knows which exits the kernel had: the learned sets
    are read after the apply (in the background), and entries whose mark no exit has
    go; the others stay."""
    ipset_restore(netns, LEFT_BY_A_KILLED_RUN)
    result = drive(netns, write_schema(SCHEMA), tmp_path / "exits.json", "remove", "adopt")
    assert {net: mark for _, _, net, mark, _ in result["adopted"]} == {
        "203.0.113.50/32": UK,
        "203.0.113.51/32": RU,
    }


def test_a_start_rebuilds_the_export_table_from_the_learned_sets(
    netns: str, tmp_path: Path, write_schema: Callable[[str], Path]
) -> None:
    """A killed run left learned entries and exported routes that no longer agree: the
    routes of entries of tunnel exits are added, a route no entry wants is deleted, and
    those that agree are left as they are."""
    ipset_restore(netns, LEFT_BY_A_KILLED_RUN)
    for route in ("203.0.113.50 dev xuk", "203.0.113.99 dev xuk"):
        sh(netns, "ip", "route", "add", *route.split(), "table", "200", "proto", "157")
    result = drive(netns, write_schema(EXPORTING), tmp_path / "exits.json", "keep", "adopt")
    assert result["problems"] == []
    routes = sh(netns, "ip", "route", "show", "table", "200")
    hosts = sorted(line.split()[0] for line in routes.splitlines())
    # .52's exit is gone; 2001:db8::7 and 203.0.113.7 are learned by the driver later
    assert hosts == ["203.0.113.50", "203.0.113.51"], routes
    assert "203.0.113.51 dev xru proto 157" in routes
