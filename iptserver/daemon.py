"""``iptserver run``: the dataplane and the DNS proxy, reloaded on SIGHUP.

A reload validates the new schema first; a bad one is rejected with the same errors
``iptserver check`` prints, and the running policy stays. Established connections keep
their exit across reloads (their mark lives in conntrack).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from iptserver.api import ApiConfig, make_app
from iptserver.dataplane.ipset import Entry
from iptserver.dataplane.kernel import Dataplane, Learned, saved_exits
from iptserver.dataplane.links import LinkWatcher, link_state
from iptserver.dataplane.plan import KernelPlan
from iptserver.dataplane.plan import plan as kernel_plan
from iptserver.dns.proxy import DnsProxy, ProxyConfig
from iptserver.errors import DataplaneError, GeoIPError, IptserverError, SchemaError
from iptserver.geoip import DEFAULT_DATABASE, GeoIPDatabase
from iptserver.health.monitor import Change, Monitor
from iptserver.health.webhook import Webhook
from iptserver.plugin_udp import PluginEndpoint, start_plugin_endpoint
from iptserver.policy import Policy
from iptserver.router import Router, State
from iptserver.schema import load_schema
from iptserver.schema.load import Loaded
from iptserver.schema.model import Route, Schema
from iptserver.schema.values import IPAddress, IPNetwork

log = logging.getLogger(__name__)

Endpoint = tuple[IPAddress, int]
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    config: Path
    geoip: Path | None = None
    listen: tuple[Endpoint, ...] = ()  # override the schema's dns.listen
    upstream: tuple[Endpoint, ...] = ()  # override the schema's dns.upstream
    keep_state: bool = False  # leave the kernel state in place on exit (for a restart)
    fail_closed: bool = False
    state_dir: Path | None = None  # where the exits the kernel holds are written down
    api: Endpoint | None = None  # override the schema's api.listen
    api_token_file: Path | None = None  # POST endpoints then need this bearer token

    @property
    def state_file(self) -> Path | None:
        return self.state_dir / "exits.json" if self.state_dir is not None else None


class Daemon:
    def __init__(self, options: Options) -> None:
        self.options = options
        self._geo: GeoIPDatabase | None = None
        self._dataplane: Dataplane | None = None
        self._router: Router | None = None
        self._stopping = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")
        self._kernel_lock = threading.Lock()  # one dataplane call at a time, any thread
        self.reloads = {"ok": 0, "rejected": 0}
        self._monitor: Monitor | None = None  # exit health; watches exits with `health`
        self._webhook = Webhook(None)
        self._tasks: set[asyncio.Future[Any]] = set()  # reloads and relinks under way
        # Tunnel interface -> its index while up, None while down or gone; see _on_link.
        self._links: dict[str, int | None] = {}
        self._plugin_endpoint: PluginEndpoint | None = None

    def _schema(self) -> Loaded:
        loaded = load_schema(self.options.config)
        schema = loaded.schema
        dns = schema.dns
        updates = {}
        if self.options.listen:
            updates["listen"] = list(self.options.listen)
        if self.options.upstream:
            updates["upstream"] = list(self.options.upstream)
        if updates:
            schema = schema.model_copy(update={"dns": dns.model_copy(update=updates)})
        return dataclasses.replace(loaded, schema=schema)

    def _open_geoip(self) -> GeoIPDatabase | None:
        path = self.options.geoip
        if path is None and DEFAULT_DATABASE.exists():
            path = DEFAULT_DATABASE
        return GeoIPDatabase(path) if path is not None else None

    def load(self) -> State:
        """Validate and compile the schema; raises SchemaError with every problem."""
        loaded = self._schema()
        schema = loaded.schema
        countries = {c for rule in schema.rules for c in rule.countries}
        if countries and self._geo is None:
            log.warning(
                "no GeoIP database (pass --geoip or run 'iptserver geoip update'): "
                "country rules %s match nothing",
                ", ".join(sorted(countries)),
            )
        networks = self._geo.networks_of(countries) if self._geo and countries else {}
        if self._dataplane is not None:
            previous = self._dataplane.exits_in_kernel
        else:
            previous = saved_exits(self.options.state_file)
        plan = kernel_plan(schema, networks, previous)
        return State(Policy(schema, self._geo), plan, loaded)

    async def run(self) -> int:
        # Before the kernel is touched: a SIGTERM while it is programmed (seconds, with
        # whole countries) must stop the daemon cleanly, not kill it half-way.
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        try:
            self._geo = self._open_geoip()
            state = self.load()
        except (SchemaError, GeoIPError) as e:
            log.error("cannot start:\n%s", e)
            return 1
        schema = state.policy.schema
        if not schema.dns.listen or not schema.dns.upstream:
            log.error(
                "cannot start: no DNS %s: set dns.listen and dns.upstream in %s or pass "
                "--listen/--upstream",
                "listen address" if not schema.dns.listen else "upstream",
                self.options.config,
            )
            return 1
        if (taken := _listened_on(schema.dns.listen)) is not None:
            log.error(
                "cannot start: another program listens for DNS on UDP %s (a second "
                "iptserver?); its kernel state is left alone",
                taken,
            )
            return 1
        # Port 53 from the ingress is redirected to the proxy, unless the proxy listens on
        # loopback only (a REDIRECT cannot reach it there): then a recursor with the
        # plugin serves the clients, and the proxy is not theirs.
        first = schema.dns.listen[0]
        redirect = first[1] if schema.ingress and not first[0].is_loopback else None
        links = self._watch_links()  # before the first apply: no tunnel is missed
        self._read_links(state.plan)
        try:
            self._dataplane = await self._kernel(Dataplane, redirect, self.options.state_file)
            problems = await self._kernel(self._dataplane.apply, state.plan)
        except DataplaneError as e:
            log.error("cannot start: %s", e)
            if self._dataplane is not None:
                await self._kernel(self._dataplane.close)
            if links is not None:
                links.close()
            return 1
        for problem in problems:
            log.error("%s", problem)
        self._router = Router(
            state,
            self._learn,
            partial(self._kernel, self._dataplane.expire_exports),
            self._learn_now,
        )
        self._router.exports_changed()
        self._webhook.url = schema.health.webhook
        monitor = Monitor(schema, self._set_routes, self._notify)
        self._monitor = monitor
        proxy = DnsProxy(
            ProxyConfig(
                listen=tuple(schema.dns.listen),
                upstream=tuple(schema.dns.upstream),
                timeout=schema.dns.timeout,
                fail_closed=self.options.fail_closed,
            ),
            self._router,
        )
        try:
            await proxy.start()
        except IptserverError as e:
            log.error("cannot start: %s", e)
            await self._kernel(self._dataplane.stop, self.options.keep_state)
            await self._kernel(self._dataplane.close)
            return 1
        try:
            api = await self._start_api(schema, proxy)
        except (OSError, IptserverError) as e:
            log.error("cannot start the HTTP API: %s", e)
            await proxy.stop()
            await self._kernel(self._dataplane.stop, self.options.keep_state)
            await self._kernel(self._dataplane.close)
            return 1
        log.info(
            "iptserver running: DNS on %s, upstream %s, %d rules, %d exits",
            ", ".join(f"{a}:{p}" for a, p in schema.dns.listen),
            ", ".join(f"{a}:{p}" for a, p in schema.dns.upstream),
            len(schema.rules),
            len(schema.exits),
        )
        monitor.start()
        if links is not None:
            links.start()
        try:
            await self._stopping.wait()
        finally:
            log.info("stopping")
            if links is not None:
                links.close()
            await monitor.stop()
            await self._webhook.close()
            if api is not None:
                await api.cleanup()
            await proxy.stop()
            self._router.close()
            await self._kernel(self._dataplane.stop, self.options.keep_state)
            await self._kernel(self._dataplane.close)
            self._executor.shutdown()
        return 0

    async def _start_api(self, schema: Schema, proxy: DnsProxy) -> web.AppRunner | None:
        """The HTTP API on --api or api.listen (off when neither is set)."""
        endpoint = self.options.api or schema.api.listen
        if endpoint is None:
            return None
        assert self._router is not None
        token = None
        if self.options.api_token_file is not None:
            try:
                token = self.options.api_token_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise IptserverError(f"cannot read the API token: {e}") from e
            if not token:
                raise IptserverError(f"the API token file {self.options.api_token_file} is empty")
        address, port = endpoint
        if token is None and not address.is_loopback:
            log.warning("the HTTP API on %s has no token: anyone who reaches it can POST", address)
        app = make_app(
            ApiConfig(
                router=self._router,
                counters=proxy.counters,
                reload=self.reload,
                reloads=self.reloads,
                monitor=self._monitor,
                geo=self._geo,
                token=token,
                installed=self._learned_now,
                set_sizes=self._set_sizes,
                plugin=lambda: self._plugin_endpoint,
                link_up=lambda interface: link_state(interface) is not None,
            )
        )
        app.on_cleanup.append(self._close_plugin_endpoint)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, str(address), port).start()
            # The recursor plugin's datagrams: the same address and port number, over UDP.
            bound = runner.addresses[0][1]
            self._plugin_endpoint = await start_plugin_endpoint(self._router, address, bound, token)
        except OSError:
            await runner.cleanup()
            raise
        log.info(
            "HTTP API on %s", f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
        )
        return runner

    async def _close_plugin_endpoint(self, app: web.Application) -> None:
        if self._plugin_endpoint is not None:
            self._plugin_endpoint.close()
            self._plugin_endpoint = None

    async def _kernel(self, call: Callable[..., T], *args: Any) -> T:
        """Run a dataplane call on the one thread that owns the netlink sockets
        (pyroute2's blocking API cannot run inside the event loop's thread)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._locked, partial(call, *args)
        )

    def _locked(self, call: Callable[[], T]) -> T:
        with self._kernel_lock:
            return call()

    def _learn_now(self, entries: Sequence[Learned]) -> bool:
        """Learned entries written right here, if the dataplane is idle and the write is
        one raw ipset message (no export table, no pyroute2): the hop to the kernel
        thread and back costs an answer more than the write. False when it is not so."""
        assert self._dataplane is not None
        if not self._kernel_lock.acquire(blocking=False):
            return False
        try:
            if not self._dataplane.learns_ipsets_only:
                return False
            self._dataplane.learn(entries)
            return True
        finally:
            self._kernel_lock.release()

    async def _learn(self, entries: Sequence[Learned]) -> frozenset[IPNetwork]:
        """Learned entries, on this thread if ``_learn_now`` can, else on the kernel's."""
        assert self._dataplane is not None
        if self._learn_now(entries):
            return frozenset()
        return await self._kernel(self._dataplane.learn, entries)

    async def _learned_now(self) -> list[tuple[int, Entry]]:
        if self._dataplane is None:
            return []
        return await self._kernel(self._dataplane.learned_now)

    async def _set_sizes(self) -> dict[str, int]:
        if self._dataplane is None:
            return {}
        return await self._kernel(self._dataplane.set_sizes)

    async def _set_routes(self, routed_by: dict[str, str | None]) -> list[str]:
        """The health monitor's route changes, on the kernel thread."""
        assert self._dataplane is not None
        return await self._kernel(self._dataplane.set_routes, routed_by)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    # -- tunnel interfaces going down and coming back --------------------------------

    def _watch_links(self) -> LinkWatcher | None:
        try:
            return LinkWatcher(self._on_link, self._on_links_lost)
        except OSError as e:
            log.error(
                "cannot follow interface events (%s): an exit tunnel made anew or brought "
                "up again carries no traffic until a reload",
                e,
            )
            return None

    def _exits_through(self, interface: str) -> list[str]:
        """The tunnel exits whose traffic leaves by ``interface`` (failover included)."""
        assert self._router is not None and self._monitor is not None
        exits = self._router.state.plan.exits
        interfaces: dict[str | None, str] = {e.name: e.interface for e in exits}
        return [
            e.name
            for e in exits
            if e.route is Route.INTERFACE
            and interfaces.get(self._monitor.routed_by(e.name)) == interface
        ]

    def _read_links(self, plan: KernelPlan) -> None:
        """The states of ``plan``'s tunnels before it is applied: link events from then
        on are queued in the watcher's socket, so none is missed (the ones already
        followed keep theirs)."""
        for exit_ in plan.exits:
            if exit_.route is Route.INTERFACE and exit_.interface not in self._links:
                self._links[exit_.interface] = link_state(exit_.interface)

    def _on_link(self, interface: str, index: int | None) -> None:
        """A link event: when a tunnel interface is up again (or made anew), its routes
        go back in; when it goes down, say whose traffic is dropped meanwhile."""
        if interface not in self._links or index == self._links[interface]:
            return
        self._links[interface] = index
        exits = self._exits_through(interface)
        if index is not None:
            self._spawn(self._relink(interface, exits))
        elif exits:
            log.warning(
                "interface %s is down or gone: traffic of exit %s is dropped until it is up",
                interface,
                ", ".join(exits),
            )

    def _on_links_lost(self) -> None:
        """The kernel dropped link events: put back the routes of every tunnel there is."""
        assert self._router is not None
        log.warning("interface events were lost (too many at once): every tunnel is relinked")
        for interface in self._links:
            if (index := link_state(interface)) is not None:
                self._spawn(self._relink(interface, self._exits_through(interface)))
            self._links[interface] = index

    async def _relink(self, interface: str, exits: list[str]) -> None:
        assert self._dataplane is not None
        problems = await self._kernel(self._dataplane.relink, interface)
        for problem in problems:
            log.error("%s", problem)
        if exits and not problems:
            log.info(
                "interface %s is up: traffic of exit %s goes through it again",
                interface,
                ", ".join(exits),
            )

    def _notify(self, change: Change) -> None:
        self._webhook.post(change.as_json())

    def _on_sighup(self) -> None:
        if self._router is None:
            log.warning("SIGHUP while starting: ignored (send it again once iptserver runs)")
            return
        self._spawn(self.reload())

    async def reload(self) -> bool:
        """Swap in the schema on disk, or keep the running one if it is bad.

        SIGHUP and the API may ask at once: one reload runs after the other."""
        async with self._reload_lock:
            return await self._reload()

    async def _reload(self) -> bool:
        assert self._dataplane is not None and self._router is not None
        try:
            state = await asyncio.to_thread(self.load)
        except (SchemaError, GeoIPError) as e:
            self.reloads["rejected"] += 1
            log.error("reload rejected, the running policy stays:\n%s", e)
            return False
        self._read_links(state.plan)
        try:
            problems = await self._kernel(self._dataplane.apply, state.plan)
        except DataplaneError as e:  # else lost in the signal handler's task
            self.reloads["rejected"] += 1
            log.error("reload failed, the kernel may hold part of the new schema: %s", e)
            self._router.forget()  # learned sets may have been rebuilt: write repeats again
            return False
        for problem in problems:
            log.error("%s", problem)
        self._router.state = state
        if self._monitor is not None:
            self._webhook.url = state.policy.schema.health.webhook
            await self._monitor.reconfigure(state.policy.schema)
        self._router.exports_changed()
        self.reloads["ok"] += 1
        log.info(
            "reloaded %s: %d rules, %d exits",
            self.options.config,
            len(state.policy.schema.rules),
            len(state.policy.schema.exits),
        )
        return True

    def stop(self) -> None:
        self._stopping.set()


def _listened_on(endpoints: list[Endpoint]) -> str | None:
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
                    return f"[{address}]:{port}" if v6 else f"{address}:{port}"
    return None
