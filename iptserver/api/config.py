"""What the API reads and calls, handed over by the daemon, and the app's typed keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry

from iptserver.api.plugin import PluginEndpoint
from iptserver.daemon.onboarding import Onboarding
from iptserver.dataplane.listing import RouteLine
from iptserver.dataplane.plan import ExitPlan
from iptserver.dns.counters import DnsCounters
from iptserver.geoip import GeoIPDatabase
from iptserver.health.monitor import Monitor
from iptserver.health.state import ExitState
from iptserver.learning import Learner
from iptserver.lists.status import ListStatus
from iptserver.schema.model import Route
from iptserver.schema.values import IPAddress


@dataclass
class ApiConfig:
    """What the API reads and calls; the daemon owns all of it."""

    learner: Learner
    counters: DnsCounters | None = None
    reload: Callable[[], Awaitable[bool]] | None = None
    reloads: Mapping[str, int] = field(default_factory=dict)  # "ok"/"rejected" counts
    geo: GeoIPDatabase | None = None
    token: str | None = None  # POST endpoints need "Authorization: Bearer TOKEN" if set
    monitor: Monitor | None = None  # exit health (None: every exit is up)
    # The DNS-learned entries the kernel holds now, in batches (None: no kernel): those
    # covering an address (None: all), of some exits' marks (None: all).
    installed: (
        Callable[[IPAddress | None, Collection[int] | None], AsyncIterator[list[RouteLine]]] | None
    ) = None
    # Each kernel set's entry count, read at scrape time (None: no kernel).
    set_sizes: Callable[[], Awaitable[dict[str, int]]] | None = None
    # DNS datagrams the kernel dropped past twice dns.rate_limit (None: no kernel).
    kernel_dropped: Callable[[], Awaitable[int]] | None = None
    # The recursor plugin's datagram endpoint, once it listens (for its counters).
    plugin: Callable[[], PluginEndpoint | None] | None = None
    # Whether an interface is up now (None: not known, no kernel).
    link_up: Callable[[str], bool] | None = None
    # Queries dropped over dns.rate_limit, by client address (None: no proxy).
    rate_limited: Callable[[], Mapping[str, int]] | None = None
    # The clients added and removed through the API (None: not here, see no_onboarding).
    onboarding: Onboarding | None = None
    no_onboarding: str = "this daemon manages no clients"
    # The schema's lists and how their refreshes went (None: no daemon).
    lists: Callable[[], Iterable[ListStatus]] | None = None

    def exit_state(self, name: str) -> ExitState:
        return self.monitor.state(name) if self.monitor is not None else ExitState.UP

    def link(self, exit_: ExitPlan) -> str | None:
        """A tunnel exit's interface: "up" or "down" (dropping its traffic); None for the
        host's own gateway, or without a kernel."""
        if self.link_up is None or exit_.route is not Route.INTERFACE:
            return None
        return "up" if self.link_up(exit_.interface) else "down"

    def routed_by(self, name: str) -> str:
        """Where an exit's traffic goes now: an exit's name, or "blocked"."""
        via = self.monitor.routed_by(name) if self.monitor is not None else name
        return via if via is not None else "blocked"


CONFIG = web.AppKey("config", ApiConfig)
REGISTRY = web.AppKey("registry", CollectorRegistry)
