"""The pure health decisions: hysteresis and which route each exit's table holds."""

from __future__ import annotations

import pytest

from iptserver.health.state import ExitState, Tracker, advance, routes
from iptserver.schema import parse_schema

UP, DOWN, UNKNOWN = ExitState.UP, ExitState.DOWN, ExitState.UNKNOWN


def run(rounds: str, fall: int = 2, rise: int = 3) -> list[ExitState]:
    """The state after each round of ``rounds`` ("+" good, "-" failed)."""
    tracker = Tracker()
    states = []
    for mark in rounds:
        tracker = advance(tracker, mark == "+", fall=fall, rise=rise)
        states.append(tracker.state)
    return states


@pytest.mark.parametrize(
    ("rounds", "expected"),
    [
        ("+++", [UNKNOWN, UNKNOWN, UP]),
        ("--", [UNKNOWN, DOWN]),
        ("+++-+-+", [UNKNOWN, UNKNOWN, UP, UP, UP, UP, UP]),  # flapping: stays up
        ("+++--", [UNKNOWN, UNKNOWN, UP, UP, DOWN]),
        ("--++-+++", [UNKNOWN, DOWN, DOWN, DOWN, DOWN, DOWN, DOWN, UP]),  # a run of 3
        ("+++---+++", [UNKNOWN, UNKNOWN, UP, UP, DOWN, DOWN, DOWN, DOWN, UP]),
    ],
    ids=["rise", "fall", "flapping-up", "down", "flapping-down", "down-and-back"],
)
def test_hysteresis(rounds: str, expected: list[ExitState]) -> None:
    assert run(rounds) == expected


def test_fall_and_rise_of_one_follow_every_round() -> None:
    assert run("+-+", fall=1, rise=1) == [UP, DOWN, UP]


SCHEMA = """\
exits:
  uk:
    interface: wg-uk
    on_down: [us, ru]
    health: {probe: ['198.51.100.80:80']}
  us:
    interface: wg-us
    health: {probe: ['198.51.100.160:80']}
  ru:
    interface: wg-ru
    on_down: block
    health: {probe: ['198.51.100.100:80']}
  de:
    interface: wg-de
    on_down: [direct]
    health: {probe: ['198.51.100.200:80']}
  direct: {interface: _DEFAULT}
rules: []
"""
EXITS = parse_schema(SCHEMA).schema.exits
OWN = {"uk": "uk", "us": "us", "ru": "ru", "de": "de"}


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({}, OWN),
        ({"uk": UNKNOWN, "us": UP}, OWN),  # unknown is routed as up
        ({"uk": DOWN}, OWN | {"uk": "us"}),
        ({"uk": DOWN, "us": DOWN}, OWN | {"uk": "ru", "us": None}),
        ({"uk": DOWN, "us": DOWN, "ru": DOWN}, OWN | {"uk": None, "us": None, "ru": None}),
        ({"uk": DOWN, "us": UNKNOWN}, OWN | {"uk": "us"}),
        ({"de": DOWN}, OWN | {"de": "direct"}),  # failover to the host gateway
    ],
    ids=["none-known", "unknown", "first", "second", "all-down-blocked", "unknown-ok", "direct"],
)
def test_route_choice(states: dict[str, ExitState], expected: dict[str, str | None]) -> None:
    assert routes(EXITS, states) == expected


def test_a_failover_exit_that_is_itself_failed_over_is_not_chained() -> None:
    """uk down, us down (its own traffic blocked): uk goes to ru, not to wherever us goes."""
    chosen = routes(EXITS, {"uk": DOWN, "us": DOWN, "ru": UP})
    assert chosen["uk"] == "ru"
