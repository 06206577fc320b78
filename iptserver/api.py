"""The HTTP API: health, Prometheus metrics, the running policy, and the answers the
PowerDNS Recursor plugin posts.

A thin adapter over ``Router`` (the same object the DNS proxy feeds), so an answer posted
here is routed exactly as one the proxy saw. Everything a client sends is validated
before it reaches the router; every error is a JSON ``{"error": ...}`` with a 4xx/5xx
status, never a crash.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from iptserver.dataplane.ipset import Entry
from iptserver.dataplane.plan import ExitPlan
from iptserver.dns.counters import DnsCounters
from iptserver.errors import DataplaneError, GeoIPError
from iptserver.explain import explain, parse_query
from iptserver.geoip import GeoIPDatabase
from iptserver.health.monitor import Monitor
from iptserver.health.state import ExitState
from iptserver.plugin_udp import PluginEndpoint
from iptserver.router import Router
from iptserver.schema.model import Route
from iptserver.schema.values import IPAddress, normalize_name

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # an answer is a few hundred bytes; bigger is a mistake or an attack
MAX_TTL = 2**31 - 1  # RFC 2181: a TTL is an unsigned 31-bit number
MAX_NAME = 253
MAX_CHAIN = 16
MAX_ADDRESSES = 512
MAX_QUERIES = 64  # explain queries per request

# The status page: static files shipped in the package, served as they are.
STATUS_FILES = {
    "index.html": "text/html",
    "status.css": "text/css",
    "status.js": "text/javascript",
}
# The page loads its own files and calls this API, nothing else.
STATUS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass
class ApiConfig:
    """What the API reads and calls; the daemon owns all of it."""

    router: Router
    counters: DnsCounters | None = None
    reload: Callable[[], Awaitable[bool]] | None = None
    reloads: Mapping[str, int] = field(default_factory=dict)  # "ok"/"rejected" counts
    geo: GeoIPDatabase | None = None
    token: str | None = None  # POST endpoints need "Authorization: Bearer TOKEN" if set
    monitor: Monitor | None = None  # exit health (None: every exit is up)
    # The DNS-learned entries the kernel holds now, with their weight (None: no kernel).
    installed: Callable[[], Awaitable[list[tuple[int, Entry]]]] | None = None
    # Each kernel set's entry count, read at scrape time (None: no kernel).
    set_sizes: Callable[[], Awaitable[dict[str, int]]] | None = None
    # The recursor plugin's datagram endpoint, once it listens (for its counters).
    plugin: Callable[[], PluginEndpoint | None] | None = None
    # Whether an interface is up now (None: not known, no kernel).
    link_up: Callable[[str], bool] | None = None

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


class BadRequest(Exception):
    """A request that breaks the contract: its message goes back to the client."""


def make_app(config: ApiConfig) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_json_errors])
    app[CONFIG] = config
    registry = CollectorRegistry(auto_describe=True)
    collector = _StateCollector(config)
    registry.register(collector)
    app[COLLECTOR] = collector
    decision = Histogram(
        "iptserver_decision_seconds",
        "Time the policy core took to decide one answer's exits",
        registry=registry,
        buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1),
    )
    config.router.observe_decision = decision.observe
    app[REGISTRY] = registry
    app.add_routes(
        [
            web.get("/", status_page),
            web.get("/status/{file}", status_file),
            web.get("/healthz", healthz),
            web.get("/metrics", metrics),
            web.get("/v1/exits", exits),
            web.get("/v1/routes", routes),
            web.get("/v1/decisions", decisions),
            web.get("/v1/status", status),
            web.get("/v1/explain", explain_view),
            web.post("/v1/answers", answers),
            web.post("/v1/reload", reload),
        ]
    )
    return app


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error a JSON body saying what is wrong (aiohttp's own are plain text)."""
    try:
        return await handler(request)
    except BadRequest as e:
        return _error(400, str(e))
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"the body is larger than {MAX_BODY} bytes")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "www-authenticate")}
        response = _error(e.status, e.reason)
        response.headers.update(headers)
        return response
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal error (logged)")


def _authorize(request: web.Request) -> None:
    token = request.app[CONFIG].token
    if token is None:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise web.HTTPUnauthorized(
            reason="a valid 'Authorization: Bearer TOKEN' header is required",
            headers={"WWW-Authenticate": 'Bearer realm="iptserver"'},
        )


def _status_response(name: str) -> web.Response:
    """One of the status page's files, read from the package."""
    body = resources.files("iptserver").joinpath("status", name).read_bytes()
    response = web.Response(body=body, content_type=STATUS_FILES[name], charset="utf-8")
    response.headers["Content-Security-Policy"] = STATUS_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-cache"
    return response


async def status_page(request: web.Request) -> web.Response:
    """The human status page (HTML that fetches the JSON endpoints)."""
    return _status_response("index.html")


async def status_file(request: web.Request) -> web.Response:
    """The page's CSS and JS; any other name is a 404."""
    name = request.match_info["file"]
    if name not in STATUS_FILES or name == "index.html":
        raise web.HTTPNotFound(reason=f"no status file {name!r}")
    return _status_response(name)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    sizes: dict[str, int] | None = None
    if config.set_sizes is not None:
        try:
            sizes = await config.set_sizes()
        except DataplaneError as e:  # the rest of the metrics still says something
            log.warning("metrics: set sizes left out: %s", e)
    request.app[COLLECTOR].sizes = sizes
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def exits(request: web.Request) -> web.Response:
    """The running exits, each with its health ``state`` (up, down, unknown), ``via``:
    the exit its traffic leaves by now (itself, a failover exit) or "blocked", and
    ``link``: whether its tunnel interface is up (see ``ApiConfig.link``)."""
    config = request.app[CONFIG]
    plan = config.router.state.plan
    return web.json_response(
        [
            {
                "name": e.name,
                "interface": e.interface,
                "mark": e.mark,
                "table": e.table,
                "route": e.route.value,
                "state": config.exit_state(e.name).value,
                "via": config.routed_by(e.name),
                "link": config.link(e),
            }
            for e in plan.exits
        ]
    )


ROUTE_KINDS = ("learned", "net", "country")


async def routes(request: web.Request) -> web.Response:
    """What is routed now: the DNS-learned entries the kernel holds (with the seconds
    left), then each rule's nets and countries. ``?exit=NAME`` (repeatable), ``?kind=``
    learned|net|country and ``?ip=ADDR`` (the routes that cover it) narrow the list."""
    config = request.app[CONFIG]
    wanted = set(request.query.getall("exit", []))
    kinds = set(request.query.getall("kind", [])) or set(ROUTE_KINDS)
    if unknown := kinds - set(ROUTE_KINDS):
        raise BadRequest(f"kind must be one of {', '.join(ROUTE_KINDS)}, not {sorted(unknown)}")
    ip = _address(request.query["ip"], "ip") if "ip" in request.query else None
    state = config.router.state
    rules = state.policy.schema.rules
    result: list[dict[str, Any]] = []
    if "learned" in kinds and config.installed is not None:
        try:
            installed = await config.installed()
        except DataplaneError as e:
            return _error(503, f"cannot read the kernel's sets: {e}")
        exit_of = {e.mark: e.name for e in state.plan.exits}
        known = config.router.learned_by()
        installed.sort(key=lambda item: (-item[0], item[1].network.version, item[1].network))
        for weight, entry in installed:
            if ip is not None and ip not in entry.network:
                continue
            names, learned_by = known.get(entry.network.network_address, ((), None))
            result.append(
                {
                    "kind": "learned",
                    "net": str(entry.network),
                    "exit": exit_of.get(entry.mark) if entry.mark is not None else None,
                    "weight": weight,
                    "expires_in": entry.timeout,
                    "rule": learned_by,
                    "names": list(names),
                }
            )
    country = _country(config, ip) if ip is not None else None
    for index, rule in enumerate(rules):
        base = {"exit": rule.exit, "weight": rule.weight, "rule": index}
        if "net" in kinds:
            for net in rule.nets:
                if ip is None or ip in net:
                    result.append({"kind": "net", "net": str(net), **base})
        if "country" in kinds:
            for code in rule.countries:
                if ip is None or code == country:
                    result.append({"kind": "country", "country": code, **base})
    return web.json_response([r for r in result if not wanted or r["exit"] in wanted])


def _country(config: ApiConfig, ip: IPAddress) -> str | None:
    if config.geo is None:
        return None
    try:
        found = config.geo.lookup(ip)
    except GeoIPError:
        return None
    return found[0] if found is not None else None


async def decisions(request: web.Request) -> web.Response:
    """The router's recent decisions, oldest first; ``?exit=NAME`` keeps one exit's."""
    wanted = request.query.getall("exit", [])
    result = []
    for names, decision in request.app[CONFIG].router.recent:
        if wanted and decision.exit not in wanted:
            continue
        result.append(
            {
                "names": list(names),
                "ip": str(decision.ip) if decision.ip is not None else None,
                "exit": decision.exit,
                "rule": decision.rule,
                "kind": decision.kind.value if decision.kind is not None else None,
                "reason": decision.reason.value,
            }
        )
    return web.json_response(result)


async def status(request: web.Request) -> web.Response:
    """Counts for the status page: answers, learned IPs per exit, DNS and reloads."""
    config = request.app[CONFIG]
    router = config.router
    names = [e.name for e in router.state.plan.exits]
    names += sorted(set(router.learned) - set(names))
    return web.json_response(
        {
            "answers": router.answers,
            "learned": {name: router.learned[name] for name in names},
            "dns": config.counters.snapshot() if config.counters is not None else None,
            "reloads": {result: config.reloads.get(result, 0) for result in ("ok", "rejected")},
        }
    )


async def explain_view(request: web.Request) -> web.Response:
    """What ``iptserver explain --json`` prints, for the running policy."""
    config = request.app[CONFIG]
    texts = request.query.getall("q", [])
    if not texts:
        raise BadRequest("give at least one query: ?q=NAME, ?q=IP or ?q=NAME=IP")
    if len(texts) > MAX_QUERIES:
        raise BadRequest(f"at most {MAX_QUERIES} queries per request")
    try:
        queries = [parse_query(text) for text in texts]
    except ValueError as e:
        raise BadRequest(str(e)) from None
    state = config.router.state
    if state.loaded is None:
        return _error(503, "the running policy does not know its file: explain is unavailable")
    return web.json_response(
        [explain(state.loaded, state.policy, query, config.geo) for query in queries]
    )


async def answers(request: web.Request) -> web.Response:
    """An answer the recursor resolved: route it, and say the TTL clients may keep it."""
    _authorize(request)
    names, addresses, ttl = _parse_answer(await _json_body(request))
    try:
        cap = await request.app[CONFIG].router.learn(names, addresses, ttl)
    except DataplaneError as e:
        log.error("answer for %s not routed: %s", names[0], e)
        return _error(503, f"the kernel refused the routes: {e}")
    return web.json_response({"ttl": cap})


async def reload(request: web.Request) -> web.Response:
    """The same reload as SIGHUP; a bad schema is rejected and the running one stays."""
    _authorize(request)
    config = request.app[CONFIG]
    if config.reload is None:
        return _error(503, "reload is not available here")
    reloaded = await config.reload()
    return web.json_response({"reloaded": reloaded})


async def _json_body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    raw = await request.read()  # raises 413 past client_max_size, even when chunked
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise BadRequest(f"the body is not JSON: {e}") from None


def _parse_answer(body: Any) -> tuple[list[str], list[IPAddress], int]:
    """``{"qname", "chain"?, "addresses", "ttl"}``, checked field by field."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - {"qname", "chain", "addresses", "ttl"})
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    for key in ("qname", "addresses", "ttl"):
        if key not in body:
            raise BadRequest(f"{key} is required")
    qname = _name(body["qname"], "qname")
    chain = body.get("chain", [])
    if not isinstance(chain, list):
        raise BadRequest("chain must be a list of names")
    if len(chain) > MAX_CHAIN:
        raise BadRequest(f"chain has more than {MAX_CHAIN} names")
    names = [qname, *(_name(n, f"chain[{i}]") for i, n in enumerate(chain))]
    raw_addresses = body["addresses"]
    if not isinstance(raw_addresses, list):
        raise BadRequest("addresses must be a list of IP addresses")
    if len(raw_addresses) > MAX_ADDRESSES:
        raise BadRequest(f"addresses has more than {MAX_ADDRESSES} entries")
    addresses = [_address(a, f"addresses[{i}]") for i, a in enumerate(raw_addresses)]
    ttl = body["ttl"]
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= MAX_TTL:
        raise BadRequest(f"ttl must be an integer from 0 to {MAX_TTL}")
    return names, addresses, ttl


def _name(raw: Any, where: str) -> str:
    if not isinstance(raw, str):
        raise BadRequest(f"{where} must be a string")
    name = normalize_name(raw)
    if not name or len(name) > MAX_NAME or any(c.isspace() or not c.isprintable() for c in name):
        raise BadRequest(f"{where} is not a DNS name: {raw[:80]!r}")
    return name


def _address(raw: Any, where: str) -> IPAddress:
    if not isinstance(raw, str):
        raise BadRequest(f"{where} must be a string")
    try:
        return ipaddress.ip_address(raw)
    except ValueError:
        raise BadRequest(f"{where} is not an IP address: {raw[:80]!r}") from None


class _StateCollector(Collector):
    """Reads the daemon's plain counters at scrape time (nothing to keep in sync)."""

    def __init__(self, config: ApiConfig) -> None:
        self._config = config
        self.sizes: dict[str, int] | None = None  # set by the handler before each scrape

    def collect(self) -> Iterator[Metric]:
        config = self._config
        if config.counters is not None:
            for key, value in config.counters.snapshot().items():
                yield CounterMetricFamily(
                    f"iptserver_dns_{key}", f"DNS proxy: {key.replace('_', ' ')}", value=value
                )
        router = config.router
        yield CounterMetricFamily(
            "iptserver_answers", "Answers routed (DNS proxy and API)", value=router.answers
        )
        learned = CounterMetricFamily(
            "iptserver_learned_ips", "Answer IPs a domain rule sent to an exit", labels=["exit"]
        )
        for name in sorted({e.name for e in router.state.plan.exits} | set(router.learned)):
            learned.add_metric([name], router.learned[name])
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
        for e in router.state.plan.exits:
            exits.add_metric([e.name, e.interface, str(e.mark), str(e.table)], 1)
        yield exits
        yield from self._sets()
        yield from self._plugin()
        yield from self._health()

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
        plan = self._config.router.state.plan
        kinds = {s.name: "never-diverted" for s in plan.private}
        kinds |= {s.name: "doh" for s in plan.doh or ()}
        for weight_class in plan.classes:
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
        names = [e.name for e in config.router.state.plan.exits]
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
        for exit_ in config.router.state.plan.exits:
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


COLLECTOR = web.AppKey("collector", _StateCollector)
