"""The monitor's loop: rounds -> state changes -> routes handed to the dataplane, a log line
and a webhook event per change; reloads keep states.

Rounds come from a scripted probe (the real one is tested in the lab, test_probe.py, and
the whole loop end to end in tests/e2e/test_failover.py).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from iptserver.health.monitor import Change, Monitor
from iptserver.health.probe import RoundResult
from iptserver.health.state import ExitState
from iptserver.schema import parse_schema
from iptserver.schema.health import Health
from iptserver.schema.model import Schema

SCHEMA = """\
exits:
  uk:
    interface: wg-uk
    on_down: [us]
    health: {{probe: ['198.51.100.80:80'], interval: 0.01, timeout: 0.01, fall: 2, rise: 2}}
  us: {{interface: wg-us}}
{extra}rules: []
"""


def schema(extra: str = "") -> Schema:
    return parse_schema(SCHEMA.format(extra=extra)).schema


class Script:
    """Round results per exit, in order; the last one repeats."""

    def __init__(self, results: list[RoundResult]) -> None:
        self.results = results
        self.rounds = 0

    async def __call__(self, interface: str, health: Health) -> RoundResult:
        result = self.results[min(self.rounds, len(self.results) - 1)]
        self.rounds += 1
        return result


GOOD = RoundResult(ok=True, handshake_age=3.0)
TIMED_OUT = RoundResult(ok=False, probe_error="timed out", handshake_age=191.0)


async def watch(monitor: Monitor, script: Script, rounds: int) -> None:
    monitor.start()
    while script.rounds < rounds:
        await asyncio.sleep(0.005)
    await monitor.stop()


def test_down_fails_over_and_up_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    applied: list[dict[str, str | None]] = []
    changes: list[Change] = []

    async def apply(routed_by: dict[str, str | None]) -> list[str]:
        applied.append(dict(routed_by))
        return []

    script = Script([GOOD, GOOD, TIMED_OUT, TIMED_OUT, TIMED_OUT, GOOD, GOOD])
    monitor = Monitor(schema(), apply, changes.append, probe=script)
    with caplog.at_level(logging.INFO, logger="iptserver.health.monitor"):
        asyncio.run(watch(monitor, script, rounds=9))
    assert [(c.previous, c.state, c.via) for c in changes] == [
        (ExitState.UNKNOWN, ExitState.UP, "uk"),
        (ExitState.UP, ExitState.DOWN, "us"),
        (ExitState.DOWN, ExitState.UP, "uk"),
    ]
    assert applied == [{"uk": "uk", "us": "us"}, {"uk": "us", "us": "us"}, {"uk": "uk", "us": "us"}]
    assert changes[1].reason == (
        "2 rounds of probes to 198.51.100.80:80 through wg-uk failed: timed out; "
        "last handshake 191 s ago"
    )
    assert changes[1].as_json()["via"] == "us"
    assert monitor.changes[("uk", "down")] == 1
    assert monitor.probe_failures["uk"] == 3
    assert (
        "exit uk DOWN (2 rounds of probes to 198.51.100.80:80 through wg-uk failed: timed out; "
        "last handshake 191 s ago): its traffic now leaves via us" in caplog.text
    )
    assert "exit uk UP (2 rounds of probes to 198.51.100.80:80 through wg-uk answered" in (
        caplog.text
    )


def test_reload_keeps_the_state_of_exits_it_keeps_and_blocks_by_default() -> None:
    applied: list[dict[str, str | None]] = []

    async def apply(routed_by: dict[str, str | None]) -> list[str]:
        applied.append(dict(routed_by))
        return []

    async def scenario() -> None:
        script = Script([TIMED_OUT])
        monitor = Monitor(schema(), apply, probe=script)
        await watch(monitor, script, rounds=3)
        assert monitor.state("uk") is ExitState.DOWN
        assert monitor.routed_by("uk") == "us"
        # The reloaded schema drops uk's failover list (on_down: block by default).
        text = SCHEMA.format(extra="  ru: {interface: wg-ru}\n").replace("on_down: [us]", "")
        await monitor.reconfigure(parse_schema(text).schema)
        assert monitor.state("uk") is ExitState.DOWN  # kept, without a new round
        assert monitor.routed_by("uk") is None
        assert monitor.state("us") is ExitState.UP  # not watched: always up
        await monitor.stop()

    asyncio.run(scenario())
    assert {"uk": None, "us": "us", "ru": "ru"} in applied


def test_a_failing_apply_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async def apply(routed_by: dict[str, str | None]) -> list[str]:
        return ["exit uk: interface wg-us does not exist"]

    script = Script([TIMED_OUT])
    monitor = Monitor(schema(), apply, probe=script)
    asyncio.run(watch(monitor, script, rounds=5))
    assert "exit uk: interface wg-us does not exist" in caplog.text
    assert monitor.state("uk") is ExitState.DOWN
