"""``iptserver run``: the dataplane and the DNS proxy, reloaded on SIGHUP.

A reload validates the new schema first; a bad one is rejected with the same errors
``iptserver check`` prints, and the running policy stays. Established connections keep
their exit across reloads (their mark lives in conntrack).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import signal
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from iptserver.daemon.clients import ProxyClients
from iptserver.daemon.lists import ListRefresher
from iptserver.daemon.memory import settle
from iptserver.daemon.onboarding import Onboarding
from iptserver.daemon.options import Options
from iptserver.daemon.tunnels import TunnelFollower
from iptserver.daemon.workers import Workers
from iptserver.dataplane.kernel import saved_exits
from iptserver.dataplane.links import link_state
from iptserver.dataplane.plan import exits_to_json
from iptserver.dataplane.plan import plan as kernel_plan
from iptserver.dataplane.worker import KernelWorker
from iptserver.dns.config import DnsProxyConfig
from iptserver.dns.proxy import DnsProxy
from iptserver.dns.upstream import Transport
from iptserver.errors import GeoIPError, IptserverError, SchemaError
from iptserver.geoip import GeoIPDatabase, open_geoip
from iptserver.health.monitor import Change, Monitor
from iptserver.health.webhook import Webhook
from iptserver.learning import Learner, State
from iptserver.mesh.topology import mesh_of
from iptserver.policy import Policy
from iptserver.schema.model import Route, Schema
from iptserver.schema.values import Endpoint, format_endpoint

log = logging.getLogger("iptserver.daemon")  # the name operators and the lab look for


@dataclass(frozen=True, slots=True)
class Running:
    """The components a started daemon reloads and reads."""

    kernel: KernelWorker
    learner: Learner
    monitor: Monitor
    tunnels: TunnelFollower
    proxy: DnsProxy
    workers: Workers | None  # --workers: more processes answering DNS
    lists: ListRefresher
    onboarding: Onboarding | None  # clients added through the API (None: see why)
    no_onboarding: str  # why clients cannot be added here

    async def relink(self, interface: str) -> list[str]:
        """An interface up again, or made anew: the exit routes through it go back in,
        and the clients added through the API if it is theirs."""
        problems = await self.kernel.relink(interface)
        if self.onboarding is not None and interface == self.onboarding.interface:
            await self.onboarding.restore()
        return problems

    def exits_through(self, interface: str) -> list[str]:
        """The tunnel exits whose traffic leaves by ``interface`` (failover included)."""
        exits = self.learner.state.plan.exits
        interfaces: dict[str | None, str] = {e.name: e.interface for e in exits}
        return [
            e.name
            for e in exits
            if e.route is Route.INTERFACE
            and interfaces.get(self.monitor.routed_by(e.name)) == interface
        ]


class Daemon:
    def __init__(self, options: Options) -> None:
        if options.lists_dir is None:  # downloaded lists last for this run only
            self._lists_dir = tempfile.TemporaryDirectory(prefix="iptserver-lists-")
            options = dataclasses.replace(options, lists_dir=Path(self._lists_dir.name))
        self.options = options
        self._lists = options.lists_reader
        self._geo: GeoIPDatabase | None = None
        self._running: Running | None = None  # once started
        self._webhook = Webhook(None)
        self._clients = ProxyClients()
        self._stopping = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[bool]] = set()  # under way, from SIGHUP
        self.reloads = {"ok": 0, "rejected": 0}

    def load(self) -> State:
        """Validate and compile the schema; raises SchemaError with every problem."""
        loaded = self.options.load(self._lists)
        schema = loaded.schema
        countries = {c for rule in schema.rules for c in rule.countries}
        if countries and self._geo is None:
            log.warning(
                "no GeoIP database (pass --geoip or run 'iptserver geoip update'): "
                "country rules %s match nothing",
                ", ".join(sorted(countries)),
            )
        networks = self._geo.networks_of(countries) if self._geo and countries else {}
        if self._running is not None:
            previous = self._running.kernel.exits_in_kernel
        else:
            previous = saved_exits(self.options.state_file)
        return State(Policy(schema, self._geo), kernel_plan(schema, networks, previous), loaded)

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; 1 when the daemon cannot start."""
        # Before the kernel is touched: a SIGTERM while it is programmed (seconds, with
        # whole countries) must stop the daemon cleanly, not kill it half-way.
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        try:
            self._geo = open_geoip(self.options.geoip)
            state = self.load()
            self._check_dns(state.policy.schema)
        except (SchemaError, GeoIPError) as e:
            log.error("cannot start:\n%s", e)
            return 1
        except IptserverError as e:
            log.error("cannot start: %s", e)
            return 1
        async with contextlib.AsyncExitStack() as stack:
            try:
                await self._start(stack, state)
            except IptserverError as e:
                log.error("cannot start: %s", e)
                return 1
            await self._stopping.wait()
            log.info("stopping")
        return 0

    def _check_dns(self, schema: Schema) -> None:
        """The proxy has somewhere to listen and to forward, and its port is free."""
        dns = schema.dns
        if not dns.listen or not dns.upstream:
            raise IptserverError(
                f"no DNS {'listen address' if not dns.listen else 'upstream'}: set dns.listen "
                f"and dns.upstream in {self.options.config} or pass --listen/--upstream"
            )
        if (taken := _listened_on(dns.listen)) is not None:
            raise IptserverError(
                f"another program listens for DNS on UDP {taken} (a second iptserver?); "
                "its kernel state is left alone"
            )

    async def _start(self, stack: contextlib.AsyncExitStack, state: State) -> None:
        """Start every component; each one's stop is registered once, on ``stack``."""
        schema = state.policy.schema
        tunnels = TunnelFollower()  # before the first apply: no tunnel event is missed
        stack.callback(tunnels.close)
        tunnels.read(state.plan)
        # Port 53 from the ingress is redirected to the proxy, unless the proxy listens on
        # loopback only (a REDIRECT cannot reach it there): then a recursor with the
        # plugin serves the clients, and the proxy is not theirs.
        first = schema.dns.listen[0]
        redirect = first[1] if schema.ingress and not first[0].is_loopback else None
        kernel = await KernelWorker.open(redirect, self.options.state_file)
        stack.push_async_callback(kernel.close, self.options.keep_state)
        for problem in await kernel.apply(state.plan):
            log.error("%s", problem)
        learner = Learner(state, kernel.learn, kernel.expire_exports, kernel.learn_now)
        stack.callback(learner.close)
        learner.exports_changed()
        kernel.exports_adopted = learner.exports_changed
        settle()  # before the proxy listens: a full collection stalls the loop
        proxy = DnsProxy(
            DnsProxyConfig(
                listen=tuple(schema.dns.listen),
                upstream=tuple(schema.dns.upstream),
                timeout=schema.dns.timeout,
                fail_closed=self.options.fail_closed,
                reuse_port=self.options.workers > 1,
            ),
            learner,
            clients=await self._clients.gate(schema),
        )
        await proxy.start()
        stack.push_async_callback(proxy.stop)
        workers = await self._start_workers(stack, state, proxy)
        self._webhook.url = schema.health.webhook
        stack.push_async_callback(self._webhook.close)
        monitor = Monitor(schema, kernel.set_routes, self._notify)
        lists = ListRefresher(self._lists, self.options.config.parent, self.reload)
        lists.follow(state.loaded)
        stack.push_async_callback(lists.close)
        onboarding, no_onboarding = self._onboarding(schema)
        if onboarding is not None:
            await onboarding.restore()
            tunnels.watch(onboarding.interface)
        running = Running(
            kernel, learner, monitor, tunnels, proxy, workers, lists, onboarding, no_onboarding
        )
        if (endpoint := self.options.api_endpoint(schema)) is not None:
            await self._serve_api(stack, running, proxy, endpoint)
        log.info(
            "iptserver running: DNS on %s, upstream %s, %d rules, %d exits",
            ", ".join(format_endpoint(e) for e in schema.dns.listen),
            ", ".join(format_endpoint(e) for e in schema.dns.upstream),
            len(schema.rules),
            len(schema.exits),
        )
        monitor.start()
        stack.push_async_callback(monitor.stop)
        lists.start()
        tunnels.start(running.relink, running.exits_through, kernel.follow_main, kernel.reannounce)
        stack.callback(tunnels.close)  # first of all: no relink while the rest stops
        self._running = running

    def _onboarding(self, schema: Schema) -> tuple[Onboarding | None, str]:
        """Who adds clients through the API: this daemon, when the clients connect to its
        node and it has a state directory to keep them in; else why not."""
        clients = mesh_of(schema).clients
        if clients is None:
            return None, "the schema has no clients section"
        entry = next((name for name, node in schema.nodes.items() if node.entry), None)
        if clients.node != entry:
            return None, f"clients connect to node {clients.node!r}, not to this entry"
        if self.options.state_dir is None:
            return None, "clients added through the API are kept in --state-dir: none is given"
        try:
            return Onboarding(clients, self.options.state_dir), ""
        except IptserverError as e:
            log.error("clients cannot be added or removed through the API: %s", e)
            return None, str(e)

    async def _start_workers(
        self, stack: contextlib.AsyncExitStack, state: State, proxy: DnsProxy
    ) -> Workers | None:
        """The worker processes of --workers, on the addresses the proxy bound."""
        if self.options.workers <= 1:
            return None
        if state.plan.export_table is not None:
            raise IptserverError(
                "--workers does not work with kernel.export_table yet (the exported routes "
                "are written by the daemon alone): run one process or drop export_table"
            )
        listen = tuple(e for t, e in proxy.addresses if t is Transport.UDP)
        workers = Workers(self.options.workers - 1, self.options, listen)
        stack.push_async_callback(workers.close)
        await workers.start(exits_to_json(state.plan.exits))
        return workers

    async def _serve_api(
        self,
        stack: contextlib.AsyncExitStack,
        running: Running,
        proxy: DnsProxy,
        endpoint: Endpoint,
    ) -> None:
        # Imported here: the HTTP server (aiohttp) costs 11 MB of RSS, and the API is off
        # unless the schema or the command line asks for it.
        from iptserver.api import ApiConfig
        from iptserver.daemon.http import read_token, serve_api

        config = ApiConfig(
            learner=running.learner,
            counters=proxy.counters,
            reload=self.reload,
            reloads=self.reloads,
            monitor=running.monitor,
            geo=self._geo,
            token=read_token(self.options.api_token_file),
            installed=running.kernel.route_batches,
            set_sizes=running.kernel.set_sizes,
            kernel_dropped=running.kernel.guard_drops,
            link_up=lambda interface: link_state(interface) is not None,
            rate_limited=lambda: running.proxy.clients.limited,
            lists=lambda: running.lists.status.values(),
            onboarding=running.onboarding,
            no_onboarding=running.no_onboarding,
        )
        await stack.enter_async_context(serve_api(config, endpoint))

    def _notify(self, change: Change) -> None:
        self._webhook.post(change.as_json())

    def _on_sighup(self) -> None:
        if self._running is None:
            log.warning("SIGHUP while starting: ignored (send it again once iptserver runs)")
            return
        task = asyncio.ensure_future(self.reload())
        self._reloads.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> bool:
        """Swap in the schema on disk, or keep the running one if it is bad.

        SIGHUP and the API may ask at once: one reload runs after the other."""
        async with self._reload_lock:
            return await self._reload()

    async def _reload(self) -> bool:
        running = self._running
        if running is None:
            log.warning("reload asked before iptserver runs: ignored")
            return False
        try:
            state = await asyncio.to_thread(self.load)
        except (SchemaError, GeoIPError) as e:
            self.reloads["rejected"] += 1
            log.error("reload rejected, the running policy stays:\n%s", e)
            return False
        running.tunnels.read(state.plan)
        try:
            problems = await running.kernel.apply(state.plan)
        except IptserverError as e:  # else lost in the signal handler's task
            self.reloads["rejected"] += 1
            log.error("reload failed, the kernel may hold part of the new schema: %s", e)
            running.learner.forget()  # learned sets may have been rebuilt: write repeats again
            return False
        for problem in problems:
            log.error("%s", problem)
        running.learner.state = state
        running.proxy.clients = await self._clients.gate(state.policy.schema)
        if running.workers is not None:
            for problem in await running.workers.reload(exits_to_json(state.plan.exits)):
                log.error("%s", problem)
        self._webhook.url = state.policy.schema.health.webhook
        await running.monitor.reconfigure(state.policy.schema)
        running.learner.exports_changed()
        running.lists.follow(state.loaded)
        if running.onboarding is not None:
            clients = mesh_of(state.policy.schema).clients
            if clients is not None and clients.interface == running.onboarding.interface:
                running.onboarding.follow(clients)
            else:
                log.warning(
                    "the clients section changed: clients added through the API "
                    "follow it after a restart"
                )
        self.reloads["ok"] += 1
        settle(full=False)
        log.info(
            "reloaded %s: %d rules, %d exits",
            self.options.config,
            len(state.policy.schema.rules),
            len(state.policy.schema.exits),
        )
        return True

    def stop(self) -> None:
        self._stopping.set()


def _listened_on(endpoints: Sequence[Endpoint]) -> str | None:
    """The first address where another process already holds the DNS port, or None.

    Checked before the kernel is programmed: a second daemon started by mistake must not
    tear down the running one's kernel state when its proxy cannot listen.
    """
    for address, port in endpoints:
        if port == 0:
            continue
        v6 = address.version == 6
        with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM) as probe:
            if v6:  # as the proxy binds: [::]:53 and 0.0.0.0:53 do not clash
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind((str(address), port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return format_endpoint((address, port))
    return None
