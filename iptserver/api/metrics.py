"""``GET /metrics``: Prometheus metrics read from the daemon's plain counters at scrape
time, so nothing has to be kept in sync; only the decision time is a histogram."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from iptserver.api.config import CONFIG, REGISTRY, ApiConfig
from iptserver.errors import DataplaneError
from iptserver.health.state import ExitState

log = logging.getLogger(__name__)


def install_metrics(app: web.Application, config: ApiConfig) -> None:
    """A registry of the app's own (nothing of the process's global one), its collector,
    and the learner's decision-time histogram."""
    registry = CollectorRegistry(auto_describe=True)
    collector = StateCollector(config)
    registry.register(collector)
    app[COLLECTOR] = collector
    decision = Histogram(
        "iptserver_decision_seconds",
        "Time the policy core took to decide one answer's exits",
        registry=registry,
        buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1),
    )
    config.learner.observe_decision = decision.observe
    app[REGISTRY] = registry


async def metrics(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    sizes: dict[str, int] | None = None
    if config.set_sizes is not None:
        try:
            sizes = await config.set_sizes()
        except DataplaneError as e:  # the rest of the metrics still says something
            log.warning("metrics: set sizes left out: %s", e)
    request.app[COLLECTOR].sizes = sizes
    dropped: int | None = None
    if config.kernel_dropped is not None:
        try:
            dropped = await config.kernel_dropped()
        except DataplaneError as e:
            log.warning("metrics: kernel drops left out: %s", e)
    request.app[COLLECTOR].kernel_dropped = dropped
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class StateCollector(Collector):
    """Reads the daemon's plain counters at scrape time (nothing to keep in sync)."""

    def __init__(self, config: ApiConfig) -> None:
        self._config = config
        self.sizes: dict[str, int] | None = None  # set by the handler before each scrape
        self.kernel_dropped: int | None = None  # likewise

    def collect(self) -> Iterator[Metric]:
        config = self._config
        if config.counters is not None:
            for key, value in config.counters.snapshot().items():
                yield CounterMetricFamily(
                    f"iptserver_dns_{key}", f"DNS proxy: {key.replace('_', ' ')}", value=value
                )
        if self.kernel_dropped is not None:
            yield CounterMetricFamily(
                "iptserver_dns_kernel_dropped",
                "DNS datagrams the kernel dropped past twice dns.rate_limit",
                value=self.kernel_dropped,
            )
        learner = config.learner
        yield CounterMetricFamily(
            "iptserver_answers", "Answers routed (DNS proxy and API)", value=learner.answers
        )
        learned = CounterMetricFamily(
            "iptserver_learned_ips", "Answer IPs a domain rule sent to an exit", labels=["exit"]
        )
        for name in sorted({e.name for e in learner.state.plan.exits} | set(learner.learned)):
            learned.add_metric([name], learner.learned[name])
        yield learned
        reloads = CounterMetricFamily(
            "iptserver_reloads", "Schema reloads by result", labels=["result"]
        )
        for result in ("ok", "rejected"):
            reloads.add_metric([result], config.reloads.get(result, 0))
        yield reloads
        exits = GaugeMetricFamily(
            "iptserver_exits",
            "The running exits (value 1), with their interface, fwmark and table",
            labels=["name", "interface", "mark", "table"],
        )
        for e in learner.state.plan.exits:
            exits.add_metric([e.name, e.interface, str(e.mark), str(e.table)], 1)
        yield exits
        yield from self._sets()
        yield from self._rate_limited()
        yield from self._plugin()
        yield from self._health()
        yield from self._lists()

    def _lists(self) -> Iterator[Metric]:
        if self._config.lists is None:
            return
        entries = GaugeMetricFamily(
            "iptserver_list_entries",
            "Domains and networks of each list in use (0: no copy yet)",
            labels=["list"],
        )
        success = GaugeMetricFamily(
            "iptserver_list_last_success_timestamp_seconds",
            "When each list was last downloaded or found unchanged (Unix time)",
            labels=["list"],
        )
        failures = CounterMetricFamily(
            "iptserver_list_failures",
            "Downloads or re-reads of each list that failed or were refused (the last good "
            "copy stayed)",
            labels=["list"],
        )
        for status in self._config.lists():
            name = status.spec.location
            entries.add_metric([name], status.entries)
            if status.last_success is not None:
                success.add_metric([name], status.last_success)
            failures.add_metric([name], status.failures)
        yield entries
        yield success
        yield failures

    def _rate_limited(self) -> Iterator[Metric]:
        if self._config.rate_limited is None:
            return
        limited = CounterMetricFamily(
            "iptserver_dns_rate_limited_by_client",
            "DNS queries over dns.rate_limit, by client (the first 1,000; the rest: others)",
            labels=["client"],
        )
        for client, count in sorted(self._config.rate_limited().items()):
            limited.add_metric([client], count)
        yield limited

    def _plugin(self) -> Iterator[Metric]:
        endpoint = self._config.plugin() if self._config.plugin is not None else None
        if endpoint is None:
            return
        for name, value, what in (
            ("datagrams", endpoint.datagrams, "Datagrams the recursor plugin sent"),
            ("rejected", endpoint.rejected, "Plugin datagrams refused: not in the format"),
            ("failed", endpoint.failed, "Plugin answers not routed: kernel refused, busy, bug"),
            ("spaced", endpoint.spaced, "Plugin replies held back: the recursor reused a port"),
        ):
            yield CounterMetricFamily(f"iptserver_plugin_{name}", what, value=value)

    def _sets(self) -> Iterator[Metric]:
        if self.sizes is None:
            return
        plan = self._config.learner.state.plan
        kinds = {s.name: "never-diverted" for s in plan.private}
        kinds |= {s.name: "doh" for s in plan.doh or ()}
        kinds |= {s.name: "sources" for source in plan.sources for s in source.clients}
        for weight_class in plan.all_classes:
            kinds |= {s.name: "learned" for s in weight_class.learned}
            kinds |= {s.name: "static" for s in weight_class.static}
        sizes = GaugeMetricFamily(
            "iptserver_set_entries",
            "Entries in each kernel set (learned: DNS-learned IPs; static: nets and countries)",
            labels=["set", "kind"],
        )
        for name, count in sorted(self.sizes.items()):
            sizes.add_metric([name, kinds.get(name, "other")], count)
        yield sizes

    def _health(self) -> Iterator[Metric]:
        config = self._config
        names = [e.name for e in config.learner.state.plan.exits]
        up = GaugeMetricFamily(
            "iptserver_exit_up",
            "1 when the exit is up (or not watched), 0 when down or not known yet",
            labels=["exit"],
        )
        for name in names:
            up.add_metric([name], 1 if config.exit_state(name) is ExitState.UP else 0)
        yield up
        links = GaugeMetricFamily(
            "iptserver_exit_link_up",
            "1 when a tunnel exit's interface is up, 0 when it is down or missing (its "
            "traffic is dropped)",
            labels=["exit"],
        )
        for exit_ in config.learner.state.plan.exits:
            if (link := config.link(exit_)) is not None:
                links.add_metric([exit_.name], 1 if link == "up" else 0)
        yield links
        monitor = config.monitor
        changes = CounterMetricFamily(
            "iptserver_exit_state_changes",
            "Times an exit went up or down (health)",
            labels=["exit", "state"],
        )
        failures = CounterMetricFamily(
            "iptserver_exit_probe_failures",
            "Health rounds of an exit that failed (probes through it, or its handshake)",
            labels=["exit"],
        )
        for name in names:
            for state in (ExitState.UP, ExitState.DOWN):
                count = monitor.changes[(name, state.value)] if monitor is not None else 0
                changes.add_metric([name, state.value], count)
            failures.add_metric([name], monitor.probe_failures[name] if monitor else 0)
        yield changes
        yield failures


COLLECTOR = web.AppKey("collector", StateCollector)
