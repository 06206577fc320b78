"""Exit health decisions, without I/O: the up/down state machine and the route choice.

An exit's rounds (one probe round every ``interval``) go through a hysteresis: ``fall``
failed rounds in a row make it down, ``rise`` good rounds in a row make it up, so an exit
that flaps between rounds does not flap routes. Given every exit's state, ``routes``
says by which exit each tunnel exit's table sends its traffic: its own while it is not
known to be down, else the first exit of its ``on_down`` list that is not down, else none
(blocked: the kill-switch route drops it).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from iptserver.schema.model import Exit, Route


class ExitState(enum.Enum):
    UNKNOWN = "unknown"  # not enough rounds yet: routed as if up
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Tracker:
    """One exit's state and its run of consecutive good or failed rounds."""

    state: ExitState = ExitState.UNKNOWN
    good: int = 0  # consecutive good rounds
    failed: int = 0  # consecutive failed rounds


def advance(tracker: Tracker, ok: bool, *, fall: int, rise: int) -> Tracker:
    """The tracker after one more round."""
    if ok:
        tracker = replace(tracker, good=tracker.good + 1, failed=0)
        if tracker.state is not ExitState.UP and tracker.good >= rise:
            tracker = replace(tracker, state=ExitState.UP)
    else:
        tracker = replace(tracker, good=0, failed=tracker.failed + 1)
        if tracker.state is not ExitState.DOWN and tracker.failed >= fall:
            tracker = replace(tracker, state=ExitState.DOWN)
    return tracker


def routes(exits: Mapping[str, Exit], states: Mapping[str, ExitState]) -> dict[str, str | None]:
    """Tunnel exit name -> the exit whose route its table holds (None: blocked).

    Exits missing from ``states`` (not watched) are never down."""
    down = {name for name, state in states.items() if state is ExitState.DOWN}
    chosen: dict[str, str | None] = {}
    for name, spec in exits.items():
        if spec.route is not Route.INTERFACE:
            continue
        if name not in down:
            chosen[name] = name
            continue
        chosen[name] = next((o for o in spec.failover if o in exits and o not in down), None)
    return chosen
