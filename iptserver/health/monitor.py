"""The health monitor: one asyncio task per watched exit, probing it every interval.

When an exit changes state (``state.advance``), every tunnel exit's route is chosen again
(``state.routes``) and handed to the dataplane through ``apply_routes`` (the daemon runs
it on its kernel thread), then the change is logged, counted for the metrics and posted
to the webhook. Rounds of different exits run concurrently; route changes one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from iptserver.dataplane.probe6 import ProbeRoutes6
from iptserver.errors import DataplaneError
from iptserver.health.probe import RoundResult, format_target, probe_round
from iptserver.health.state import ExitState, Tracker, advance, routes
from iptserver.schema.health import Health
from iptserver.schema.model import Schema

log = logging.getLogger(__name__)

# routed_by -> problems; see Dataplane.set_routes.
ApplyRoutes = Callable[[dict[str, str | None]], Awaitable[list[str]]]
Probe = Callable[[str, Health], Awaitable[RoundResult]]


@dataclass(frozen=True, slots=True)
class Change:
    """An exit went up or down."""

    exit: str
    state: ExitState
    previous: ExitState
    reason: str
    at: datetime.datetime
    via: str | None  # where the exit's traffic goes now (None: blocked)

    def as_json(self) -> dict[str, str]:
        return {
            "exit": self.exit,
            "state": self.state.value,
            "previous": self.previous.value,
            "reason": self.reason,
            "at": self.at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "via": self.via if self.via is not None else "blocked",
        }


class Monitor:
    def __init__(
        self,
        schema: Schema,
        apply_routes: ApplyRoutes,
        notify: Callable[[Change], None] | None = None,
        probe: Probe | None = None,
    ) -> None:
        """``probe``: one round of an exit's probes (default: ``probe_round``, with the
        IPv6 probe routes this monitor makes and removes at ``stop``)."""
        self._schema = schema
        self._apply_routes = apply_routes
        self._notify = notify
        self._routes6 = ProbeRoutes6()
        self._probe = probe or functools.partial(probe_round, routes6=self._routes6)
        self._trackers: dict[str, Tracker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._routing = asyncio.Lock()
        self._routed_by: dict[str, str | None] = routes(schema.exits, {})
        # What the API shows: the states the kernel's routes follow, published with
        # ``_routed_by`` (a tracker changes before its reroute runs).
        self._states: dict[str, ExitState] = {}
        self._unread_handshakes: set[str] = set()  # warned once: no UAPI socket
        self.changes: Counter[tuple[str, str]] = Counter()  # (exit, new state) -> count
        self.probe_failures: Counter[str] = Counter()  # exit -> failed rounds

    # -- what the API reads ------------------------------------------------------------

    def state(self, name: str) -> ExitState:
        """An exit's state; an exit without health is always up."""
        spec = self._schema.exits.get(name)
        if spec is not None and spec.health is None:
            return ExitState.UP
        return self._states.get(name, Tracker().state)

    def routed_by(self, name: str) -> str | None:
        """The exit whose route carries ``name``'s traffic now (None: blocked)."""
        return self._routed_by.get(name, name)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._sync_tasks()

    async def reconfigure(self, schema: Schema) -> None:
        """After a reload: exits that are still watched keep their state."""
        self._schema = schema
        watched = {n for n, e in schema.exits.items() if e.health is not None}
        for name in set(self._trackers) - watched:
            del self._trackers[name]
        await self._stop_tasks(set(self._tasks) - watched)
        self._sync_tasks()
        await self._reroute()

    async def stop(self) -> None:
        await self._stop_tasks(set(self._tasks))
        try:
            await asyncio.to_thread(self._routes6.remove)
        except DataplaneError as e:
            log.warning("health: %s", e)

    def _sync_tasks(self) -> None:
        for name, spec in self._schema.exits.items():
            if spec.health is not None and name not in self._tasks:
                self._tasks[name] = asyncio.create_task(self._watch(name), name=f"health-{name}")

    async def _stop_tasks(self, names: set[str]) -> None:
        tasks = [self._tasks.pop(name) for name in names]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- rounds ------------------------------------------------------------------------

    async def _watch(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            spec = self._schema.exits[name]
            if spec.health is None:  # a reload took it away; reconfigure cancels us
                return
            began = loop.time()
            try:
                result = await self._probe(spec.interface, spec.health)
                await self._observe(name, spec.interface, spec.health, result)
            except asyncio.CancelledError:
                raise
            except Exception:  # one exit's bug must not stop watching the others
                log.exception("exit %s: health round failed unexpectedly", name)
            await asyncio.sleep(max(0.0, began + spec.health.interval - loop.time()))

    async def _observe(
        self, name: str, interface: str, health: Health, result: RoundResult
    ) -> None:
        if not result.ok:
            self.probe_failures[name] += 1
        unread = health.handshake_max and result.ok and result.handshake_age is None
        if unread and name not in self._unread_handshakes:
            self._unread_handshakes.add(name)
            log.warning(
                "exit %s: %s has no wireguard-go control socket: its handshake age is "
                "not checked (probes still are)",
                name,
                interface,
            )
        before = self._trackers.get(name, Tracker())
        after = advance(before, result.ok, fall=health.fall, rise=health.rise)
        self._trackers[name] = after
        if after.state is before.state:
            return
        await self._reroute(changed=name)
        change = Change(
            exit=name,
            state=after.state,
            previous=before.state,
            reason=_reason(interface, health, result, after),
            at=datetime.datetime.now(datetime.UTC),
            via=self.routed_by(name),
        )
        self.changes[(name, after.state.value)] += 1
        _log_change(change)
        if self._notify is not None:
            self._notify(change)

    async def _reroute(self, changed: str | None = None) -> None:
        async with self._routing:
            states = {name: tracker.state for name, tracker in self._trackers.items()}
            wanted = routes(self._schema.exits, states)
            before = self._routed_by, self._states
            # Published before the kernel has it: by the time traffic takes the new
            # route, the API already says so (and a refusal below takes it back).
            self._routed_by, self._states = wanted, states
            try:
                problems = await self._apply_routes(wanted)
            except BaseException:
                self._routed_by, self._states = before
                raise
            for problem in problems:
                log.error("%s", problem)
            for name, via in wanted.items():
                old = before[0].get(name, name)
                if via != old and name not in (via, changed):
                    where = f"via {via}" if via is not None else "nowhere (blocked)"
                    log.warning("exit %s is down: its traffic now leaves %s", name, where)


def _reason(interface: str, health: Health, result: RoundResult, tracker: Tracker) -> str:
    """Why the exit changed state, in the operator's terms."""
    targets = ", ".join(format_target(t) for t in health.probe)
    parts = []
    if tracker.state is ExitState.DOWN:
        if result.probe_error is not None:
            parts.append(
                f"{tracker.failed} rounds of probes to {targets} through {interface} failed: "
                f"{result.probe_error}"
            )
        elif result.handshake_problem is None:
            parts.append(f"{tracker.failed} failed rounds through {interface}")
        if result.handshake_problem is not None:
            parts.append(result.handshake_problem)
        elif result.handshake_age is not None:
            parts.append(f"last handshake {result.handshake_age:.0f} s ago")
    else:
        if health.probe:
            parts.append(
                f"{tracker.good} rounds of probes to {targets} through {interface} answered"
            )
        else:
            parts.append(f"{tracker.good} good rounds")
        if result.handshake_age is not None:
            parts.append(f"last handshake {result.handshake_age:.0f} s ago")
    return "; ".join(parts)


def _log_change(change: Change) -> None:
    state = change.state.value.upper()
    if change.via is None:
        where = "its traffic is dropped (blocked) until it is back"
        if change.state is ExitState.DOWN:
            log.error("exit %s %s (%s): %s", change.exit, state, change.reason, where)
            return
    elif change.via == change.exit:
        again = "" if change.previous is ExitState.UNKNOWN else " again"
        where = f"its traffic leaves through it{again}"
    else:
        where = f"its traffic now leaves via {change.via}"
    level = logging.WARNING if change.state is ExitState.DOWN else logging.INFO
    log.log(level, "exit %s %s (%s): %s", change.exit, state, change.reason, where)
