"""Tunnel interfaces that go down, are made anew or appear after start.

The kernel drops an interface's routes with it. The exported routes out of it go back
at once as blackholes (the mesh keeps sending that traffic to the entry, whose
kill-switch drops it); when the interface is up again the exit tables and exported
routes through it go back in (no reload, no health needed), and the log says whose
traffic was dropped meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from iptserver.dataplane.links import LinkWatcher, link_state
from iptserver.dataplane.plan import KernelPlan
from iptserver.schema.model import Route

log = logging.getLogger(__name__)

Relink = Callable[[str], Awaitable[list[str]]]  # interface -> problems
FollowMain = Callable[[], Awaitable[list[str]]]  # -> problems
# Seconds between putting an interface's routes back and announcing its exported host
# routes again: FRR's zebra must take the interface for up first.
REANNOUNCE_DELAY = 1.0
ExitsThrough = Callable[[str], list[str]]  # interface -> the exits whose traffic it carries


class TunnelFollower:
    """Follows the tunnel interfaces of the plans it is shown.

    Made before the kernel is first programmed: link events from then on queue in the
    watcher's socket, and ``start`` begins reading them.
    """

    def __init__(self) -> None:
        # Tunnel interface -> its index while up, None while down or gone.
        self._links: dict[str, int | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._relink: Relink | None = None
        self._exits_through: ExitsThrough | None = None
        self._follow_main: FollowMain | None = None
        self._reannounce: Relink | None = None
        self._following = False  # a copy of main's default routes is under way
        try:
            self._watcher: LinkWatcher | None = LinkWatcher(
                self._on_link, self._on_links_lost, on_main_default=self._on_main_default
            )
        except OSError as e:
            log.error(
                "cannot follow interface events (%s): an exit tunnel made anew or brought "
                "up again carries no traffic until a reload",
                e,
            )
            self._watcher = None

    def read(self, plan: KernelPlan) -> None:
        """The states of ``plan``'s tunnels, read before it is applied (the ones already
        followed keep theirs)."""
        for exit_ in plan.exits:
            if exit_.route is Route.INTERFACE and exit_.interface not in self._links:
                self._links[exit_.interface] = link_state(exit_.interface)

    def start(
        self,
        relink: Relink,
        exits_through: ExitsThrough,
        follow_main: FollowMain | None = None,
        reannounce: Relink | None = None,
    ) -> None:
        self._relink, self._exits_through = relink, exits_through
        self._follow_main = follow_main
        self._reannounce = reannounce
        if self._watcher is not None:
            self._watcher.start()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    def watch(self, interface: str) -> None:
        """Follow ``interface`` too (not an exit's: the clients'), for ``relink``."""
        self._links.setdefault(interface, link_state(interface))

    def _on_link(self, interface: str, index: int | None) -> None:
        """When a tunnel interface is up again (or made anew), its routes go back in;
        when it goes down, say whose traffic is dropped meanwhile."""
        if interface not in self._links or index == self._links[interface]:
            return
        assert self._exits_through is not None
        self._links[interface] = index
        exits = self._exits_through(interface)
        if index is not None:
            self._spawn(self._relinked(interface, exits))
            return
        if exits:
            log.warning(
                "interface %s is down or gone: traffic of exit %s is dropped until it is up",
                interface,
                ", ".join(exits),
            )
        if self._reannounce is not None:  # the kernel dropped its exported routes
            self._spawn(self._blackholed(interface))

    def _on_main_default(self) -> None:
        """main's default route changed (DHCP, the operator): the host gateway exits'
        tables copy it again, once for a burst of changes."""
        if self._follow_main is None or self._following:
            return
        self._following = True
        self._spawn(self._followed())

    async def _followed(self) -> None:
        assert self._follow_main is not None
        await asyncio.sleep(0)  # the rest of a burst arrives first
        self._following = False
        for problem in await self._follow_main():
            log.error("%s", problem)
        log.info("main's default route changed: the host gateway exits follow it")

    def _on_links_lost(self) -> None:
        """The kernel dropped link events: put back the routes of every tunnel there is."""
        assert self._exits_through is not None
        log.warning("interface events were lost (too many at once): every tunnel is relinked")
        self._on_main_default()
        for interface in self._links:
            if (index := link_state(interface)) is not None:
                self._spawn(self._relinked(interface, self._exits_through(interface)))
            self._links[interface] = index

    async def _blackholed(self, interface: str) -> None:
        assert self._reannounce is not None
        for problem in await self._reannounce(interface):
            log.warning("%s", problem)

    async def _relinked(self, interface: str, exits: list[str]) -> None:
        assert self._relink is not None
        problems = await self._relink(interface)
        for problem in problems:
            log.error("%s", problem)
        if exits and not problems:
            log.info(
                "interface %s is up: traffic of exit %s goes through it again",
                interface,
                ", ".join(exits),
            )
        if self._reannounce is not None:
            await asyncio.sleep(REANNOUNCE_DELAY)
            for problem in await self._reannounce(interface):
                log.error("%s", problem)
