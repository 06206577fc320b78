"""The kernel dataplane of the network namespace iptserver runs in.

``apply`` makes the kernel hold a ``KernelPlan``: sets first (the chain refers to them),
then the chain, then each exit's rule and routes, then it removes what an earlier plan
made and this one does not need. It is idempotent, so a restart adopts what it finds
(learned entries survive a restart with ``keep_state``). An exit whose interface is
missing is reported and its traffic dropped (its table's kill-switch route, see
``routing``) until ``relink`` is told the interface is up. ``set_routes`` is how exit
health fails an exit's table over to another exit's route, or blocks it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from iptserver.dataplane import firewall
from iptserver.dataplane.export import ExportTable, HostRoute
from iptserver.dataplane.ipset import Entry, IPSets
from iptserver.dataplane.links import link_state
from iptserver.dataplane.listing import Learned
from iptserver.dataplane.plan import (
    MARK_MASK,
    ExitPlan,
    KernelPlan,
    LearnedEntry,
    SetPlan,
    exits_from_json,
    exits_to_json,
)
from iptserver.dataplane.routing import Routing
from iptserver.errors import DataplaneError
from iptserver.schema.model import Route
from iptserver.schema.values import IPNetwork

log = logging.getLogger(__name__)

PREFIX = "ipts-"


@dataclass(frozen=True)
class Adoption:
    """What an apply left for a reading of the learned sets, done off the kernel thread
    (``worker.adopt``): drop the entries whose mark no exit has (``stale``), and rebuild
    the export table's record and routes from the entries (``exports``)."""

    stale: bool = False
    exports: bool = False

    def __bool__(self) -> bool:
        return self.stale or self.exports

    def __or__(self, other: Adoption) -> Adoption:
        return Adoption(self.stale or other.stale, self.exports or other.exports)


class Dataplane:
    def __init__(self, dns_port: int | None = None, state_file: Path | None = None) -> None:
        self.dns_port = dns_port
        self._sets = IPSets()
        self._routing = Routing()
        self._plan: KernelPlan | None = None
        # Exit name -> the exit whose route its table holds while it is down (None:
        # blocked); exits not in here take their own route. Set by the health monitor.
        self._routed_by: dict[str, str | None] = {}
        self._state_file = state_file
        # The exits a previous run left in the kernel (with --keep-state), if it said.
        self._previous_exits = saved_exits(state_file)
        # kernel.export_table: the learned host routes FRR announces, with their deadlines.
        self._exports = ExportTable()
        self._held: set[HostRoute] = set()  # the table's routes, while ``adopt`` runs
        # What the learned sets must be read for since the last apply (see ``Adoption``).
        self.adoption = Adoption()

    def close(self) -> None:
        self._sets.close()
        self._routing.close()

    @property
    def plan(self) -> KernelPlan | None:
        return self._plan

    @property
    def exits_in_kernel(self) -> tuple[ExitPlan, ...]:
        """The exits whose marks, rules and tables the kernel holds now."""
        return self._plan.exits if self._plan is not None else self._previous_exits

    def set_sizes(self) -> dict[str, int]:
        """Each set of the plan: how many entries the kernel holds in it."""
        if self._plan is None:
            return {}
        return {set_plan.name: self._sets.size(set_plan.name) for set_plan in self._plan.sets}

    def apply(self, plan: KernelPlan) -> list[str]:
        """Program ``plan``; return the problems of exits that could not be set up.

        If the first plan fails half-way, what it made is removed before the error goes
        up: a daemon that could not start leaves no half-made state.
        """
        try:
            return self._apply(plan)
        except DataplaneError:
            if self._plan is None:
                self._plan = plan
                with contextlib.suppress(DataplaneError):
                    self.stop()
            raise

    def _apply(self, plan: KernelPlan) -> list[str]:
        for set_plan in (
            *plan.private,
            *(plan.doh or ()),
            *(s for c in plan.sources for s in c.clients),
        ):
            self._fill(set_plan, mark=False)
        for weight_class in plan.all_classes:
            for set_plan in weight_class.learned:
                self._sets.create(
                    set_plan.name,
                    set_plan.family,
                    timeout=True,
                    skbinfo=True,
                    maxelem=plan.max_learned,
                )
            for set_plan in weight_class.static:
                self._fill(set_plan, mark=True)
        firewall.install(plan, self.dns_port)
        problems = []
        for exit_ in plan.exits:
            try:
                self._routing.install_exit(exit_, self._route_of(plan, exit_))
                _loosen_rp_filter(exit_)
            except DataplaneError as e:
                log.error("%s", e)
                problems.append(str(e))
        self.adoption = Adoption()
        self._drop_stale(plan)
        self._sync_exports(plan)
        self._sync_policy(plan)
        self._plan = plan
        self._save_state()
        log.info(
            "dataplane ready: %d exits, %d weight classes, %d static entries",
            len(plan.exits),
            len(plan.classes),
            sum(len(s.entries) for c in plan.classes for s in c.static),
        )
        return problems

    def _fill(self, set_plan: SetPlan, *, mark: bool) -> None:
        """Make a static set hold exactly its entries, swapping in a full copy."""
        entries = [Entry(net, m if mark else None) for net, m in set_plan.entries]
        if not self._sets.exists(set_plan.name):
            self._sets.create(set_plan.name, set_plan.family, timeout=False, skbinfo=mark)
            self._sets.add(set_plan.name, entries, MARK_MASK)
            return
        staging = f"{PREFIX}new-{set_plan.name[len(PREFIX) :]}"[:31]
        self._sets.destroy(staging)
        self._sets.create(staging, set_plan.family, timeout=False, skbinfo=mark)
        try:
            self._sets.add(staging, entries, MARK_MASK)
            self._sets.swap(staging, set_plan.name)
        finally:
            self._sets.destroy(staging)

    def _drop_stale(self, plan: KernelPlan) -> None:
        """Remove what an earlier plan made that this one does not use."""
        wanted = {s.name for s in plan.sets}
        for name in self._sets.names():
            if name.startswith(PREFIX) and name not in wanted:
                self._sets.destroy(name)
        if self.exits_in_kernel:
            # An exit's rule and its table are dropped apart: a kept exit may have moved to
            # another table (its rule was replaced above, so leave the rule; flush the old
            # table, or it outlives stop()).
            priorities = {e.priority for e in plan.exits}
            tables = {e.table for e in plan.exits}
            for old in self.exits_in_kernel:
                self._routing.remove_exit(
                    old,
                    rule=old.priority not in priorities,
                    routes=old.table not in tables,
                )
        marks = {e.mark for e in plan.exits}
        known = {e.mark for e in self.exits_in_kernel}
        if (not known or not known <= marks) and self._holds_learned(plan):
            # Entries may carry the mark of an exit that is gone: found by ``adopt``
            # (listing a full set takes seconds, not on the thread answers wait for).
            self.adoption |= Adoption(stale=True)

    def _route_of(self, plan: KernelPlan, exit_: ExitPlan) -> ExitPlan | None:
        """The exit whose route ``exit_``'s table holds (None: blocked)."""
        via = self._routed_by.get(exit_.name, exit_.name)
        if via is None or via not in {e.name for e in plan.exits}:
            return None
        return plan.exit(via)

    def set_routes(self, routed_by: dict[str, str | None]) -> list[str]:
        """Route each tunnel exit's table by the exit ``routed_by`` names for it (itself
        when absent; None: blocked), changing only tables that differ. Returns the
        problems of tables that could not be set."""
        if self._plan is None:
            return []
        problems = []
        for exit_ in self._plan.exits:
            if exit_.route is not Route.INTERFACE:
                continue
            want = routed_by.get(exit_.name, exit_.name)
            if want == self._routed_by.get(exit_.name, exit_.name):
                continue
            if want == exit_.name:
                self._routed_by.pop(exit_.name, None)
            else:
                self._routed_by[exit_.name] = want
            problems += self._set_route(exit_, self._route_of(self._plan, exit_))
        return problems

    def relink(self, interface: str) -> list[str]:
        """Put back the routes through ``interface``, which is up again or made anew:
        the kernel dropped them with it (exit tables routed by it; the exported host
        routes out of it go back with ``reannounce``). Returns the problems."""
        plan = self._plan
        if plan is None:
            return []
        problems = []
        for exit_ in plan.exits:
            via = self._route_of(plan, exit_) if exit_.route is Route.INTERFACE else None
            if via is not None and via.interface == interface:
                problems += self._set_route(exit_, via)
        return problems

    def reannounce(self, interface: str) -> list[str]:
        """Put the exported routes out of ``interface`` back as new routes: a moment after
        ``relink`` (zebra takes a route out of an interface it does not yet take for up
        as inactive), or as blackholes when it went down (the kernel dropped them with
        it, and the mesh would have sent that traffic out of its own uplinks)."""
        plan = self._plan
        if plan is None:
            return []
        problems = []
        for table, routes in (
            (plan.export_table, self._exports.routes()),
            (plan.policy_table, plan.policy_routes),
        ):
            lost = [route for route in routes if route.interface == interface]
            if table is None or not lost:
                continue
            problems += self._routing.reannounce_host_routes(table, lost)
            log.info(
                "table %d: %d exported routes out of %s announced again%s",
                table,
                len(lost),
                interface,
                "" if link_state(interface) is not None else " (as blackholes)",
            )
        return problems

    def follow_main(self) -> list[str]:
        """Copy main's default routes again into the tables that route by the host's own
        gateway: the host gateway exits', and tunnel exits' failed over to one. Returns
        the problems."""
        plan = self._plan
        if plan is None:
            return []
        problems = []
        for exit_ in plan.exits:
            if exit_.route is Route.INTERFACE:
                via = self._route_of(plan, exit_)
                if via is None or via.route is not Route.HOST_GATEWAY:
                    continue
            try:
                self._routing.follow_main(exit_.table)
            except DataplaneError as e:
                problems.append(str(e))
        return problems

    def _set_route(self, exit_: ExitPlan, via: ExitPlan | None) -> list[str]:
        try:
            self._routing.set_route(exit_, via)
        except DataplaneError as e:
            return [str(e)]
        return []

    @property
    def learns_ipsets_only(self) -> bool:
        """Whether ``learn`` writes nothing but ipsets, through a raw netlink socket (no
        export table, so no pyroute2): then it may run on any thread, one call at a time."""
        return self._plan is not None and self._plan.export_table is None

    def learn(self, entries: Sequence[LearnedEntry]) -> frozenset[IPNetwork]:
        """Add or refresh DNS-learned entries, one netlink message per set and batch.

        Returns the networks whose host route this call put in the export table (none
        when the table is off or every route was there already)."""
        write_learned(self._sets, entries)
        if self._plan is not None and self._plan.export_table is not None:
            now = time.monotonic()
            wanted = self._exported(
                self._plan, ((e.network, e.mark, e.timeout) for e in entries), now
            )
            missing = self._exports.refresh(wanted)
            for problem in self._routing.replace_host_routes(self._plan.export_table, missing):
                log.warning("%s", problem)
            return frozenset(route.network for route in missing)
        return frozenset()

    def expire_exports(self, now: float | None = None) -> float | None:
        """Delete the exported host routes whose hold is over; return the next deadline
        (``time.monotonic()`` seconds), or None when none is left."""
        now = time.monotonic() if now is None else now
        gone = self._exports.expired(now)
        if gone and self._plan is not None and self._plan.export_table is not None:
            self._routing.delete_host_routes(self._plan.export_table, gone)
            log.debug("export table: %d host routes expired", len(gone))
        return self._exports.next_deadline()

    def _exported(
        self,
        plan: KernelPlan,
        learned: Iterable[tuple[IPNetwork, int | None, int | None]],
        now: float,
    ) -> list[tuple[HostRoute, float]]:
        """The host routes (and deadlines) of learned entries whose exit is a tunnel."""
        tunnels = _tunnels(plan)
        return [
            (HostRoute(network, tunnels[mark]), now + timeout)
            for network, mark, timeout in learned
            if mark in tunnels and timeout is not None
        ]

    def _sync_exports(self, plan: KernelPlan) -> None:
        """Keep the export table's record across a reload that leaves the tunnels where
        they were; otherwise (a start, another table, tunnels moved) start it anew and
        leave ``adopt`` to rebuild it from the learned sets."""
        old = self._plan.export_table if self._plan is not None else None
        if old is not None and old != plan.export_table:
            self._routing.delete_host_routes(old, self._routing.exported_routes(old))
        if plan.export_table is None:
            self._exports = ExportTable()
        elif old != plan.export_table or _tunnels(self._plan) != _tunnels(plan):
            self._exports = ExportTable()
            if self._holds_learned(plan) or self._routing.exported_routes(plan.export_table):
                self.adoption |= Adoption(exports=True)

    def _sync_policy(self, plan: KernelPlan) -> None:
        """Make the policy table hold the plan's routes, writing only what changed: a
        reload that keeps the nets withdraws nothing from the mesh."""
        old = self._plan.policy_table if self._plan is not None else None
        if old is not None and old != plan.policy_table:
            self._routing.delete_host_routes(old, self._routing.exported_routes(old))
        if plan.policy_table is None:
            return
        if self._plan is not None and old == plan.policy_table:
            held: Sequence[HostRoute] = self._plan.policy_routes
        else:  # a start, or another table: read what is there
            held = self._routing.exported_routes(plan.policy_table)
        was = {route.network: route.interface for route in held}
        wanted = {route.network: route.interface for route in plan.policy_routes}
        gone = [HostRoute(net, iface) for net, iface in was.items() if net not in wanted]
        self._routing.delete_host_routes(plan.policy_table, gone)
        changed = [r for r in plan.policy_routes if was.get(r.network) != r.interface]
        for problem in self._routing.replace_host_routes(plan.policy_table, changed):
            log.warning("%s", problem)
        if gone or changed:
            log.info(
                "policy table %d: %d routes for send: policy nodes (%d added or moved, "
                "%d withdrawn)",
                plan.policy_table,
                len(wanted),
                len(changed),
                len(gone),
            )

    def _holds_learned(self, plan: KernelPlan) -> bool:
        """Whether any learned set holds an entry (read from the sets' headers)."""
        return any(
            self._sets.size(set_plan.name)
            for weight_class in plan.all_classes
            for set_plan in weight_class.learned
        )

    def drop_learned(self, found: Sequence[Learned]) -> None:
        """Delete listed learned entries (those of exits that are gone)."""
        by_set: dict[str, list[Entry]] = defaultdict(list)
        for learned in found:
            by_set[learned.set_name].append(learned.entry)
        for name, entries in by_set.items():
            self._sets.delete(name, entries)

    def held_exports(self) -> None:
        """Read which host routes the export table holds, before ``adopt_exports``."""
        table = self._plan.export_table if self._plan is not None else None
        self._held = set(self._routing.exported_routes(table)) if table is not None else set()

    def adopt_exports(self, found: Sequence[Learned]) -> list[str]:
        """Take listed learned entries of tunnel exits into the export table's record,
        adding the host routes the table lacks. Returns the problems."""
        plan = self._plan
        if plan is None or plan.export_table is None:
            return []
        learned = ((f.entry.network, f.entry.mark, f.entry.timeout) for f in found)
        changed = self._exports.refresh(self._exported(plan, learned, time.monotonic()))
        missing = [route for route in changed if route not in self._held]
        return self._routing.replace_host_routes(plan.export_table, missing)

    def prune_exports(self) -> None:
        """After ``adopt_exports``: delete the held host routes no learned entry wants."""
        plan = self._plan
        if plan is not None and plan.export_table is not None:
            wanted = {route.network for route in self._exports.routes()}
            gone = sorted((r for r in self._held if r.network not in wanted), key=_route_order)
            self._routing.delete_host_routes(plan.export_table, gone)
        self._held = set()

    def stop(self, keep_state: bool = False) -> None:
        """Remove everything this dataplane made, unless ``keep_state`` (for a restart)."""
        if keep_state or self._plan is None:
            return
        try:
            firewall.remove()
        except DataplaneError as e:  # the routes and sets still go; then it is said
            unremoved: DataplaneError | None = e
        else:
            unremoved = None
        if self._plan.export_table is not None:
            table = self._plan.export_table
            self._routing.delete_host_routes(table, self._routing.exported_routes(table))
            self._exports = ExportTable()
        if self._plan.policy_table is not None:
            table = self._plan.policy_table
            self._routing.delete_host_routes(table, self._routing.exported_routes(table))
        for exit_ in self._plan.exits:
            self._routing.remove_exit(exit_)
        for name in self._sets.names():
            if name.startswith(PREFIX):
                self._sets.destroy(name)
        self._plan = None
        if self._state_file is not None:
            self._state_file.unlink(missing_ok=True)
        if unremoved is not None:
            raise unremoved

    def _save_state(self) -> None:
        if self._state_file is None or self._plan is None:
            return
        try:
            self._state_file.parent.mkdir(parents=True, exist_ok=True)
            partial = self._state_file.with_name(self._state_file.name + ".partial")
            partial.write_text(exits_to_json(self._plan.exits))
            partial.replace(self._state_file)
        except OSError as e:
            log.warning(
                "cannot save %s (%s): a restart may not keep exit marks", self._state_file, e
            )


def write_learned(sets: IPSets, entries: Sequence[LearnedEntry]) -> None:
    """Add or refresh learned entries: one netlink message per set (and 1,000 entries)."""
    by_set: dict[str, list[Entry]] = defaultdict(list)
    for learned in entries:
        by_set[learned.set_name].append(Entry(learned.network, learned.mark, learned.timeout))
    for name, batch in by_set.items():
        sets.add(name, batch, MARK_MASK)


def _tunnels(plan: KernelPlan | None) -> dict[int, str]:
    """Mark -> interface of the tunnel exits: where exported host routes point."""
    if plan is None:
        return {}
    return {e.mark: e.interface for e in plan.exits if e.route is Route.INTERFACE}


def _route_order(route: HostRoute) -> tuple[int, int]:
    return (route.network.version, int(route.network.network_address))


def saved_exits(path: Path | None) -> tuple[ExitPlan, ...]:
    """The exits a previous run wrote down, so they keep their marks and the rules and
    tables of exits that are gone can be removed."""
    if path is None or not path.exists():
        return ()
    try:
        return exits_from_json(path.read_text())
    except (OSError, ValueError, TypeError, KeyError) as e:
        log.warning("ignoring %s (%s): exits of a previous run may keep their rules", path, e)
        return ()


def _loosen_rp_filter(exit_: ExitPlan) -> None:
    """Replies from the far side come back on the exit's interface, which the main
    table does not route to: strict reverse-path filtering would drop them."""
    if exit_.route is not Route.INTERFACE:
        return
    path = Path(f"/proc/sys/net/ipv4/conf/{exit_.interface}/rp_filter")
    try:
        if path.read_text().strip() == "1":
            path.write_text("2")
    except OSError as e:
        raise DataplaneError(f"exit {exit_.name}: cannot set loose rp_filter: {e}") from e
