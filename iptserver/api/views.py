"""The read side of the API: health, the running exits, what is routed, recent
decisions, counts for the status page, and ``explain`` for the running policy.

A thin adapter over ``Learner`` (the same object the DNS proxy feeds); what a client
sends in a query string is checked before it reaches anything.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from iptserver.api.answers import BadRequest, check_address
from iptserver.api.config import CONFIG, ApiConfig
from iptserver.api.http import authorize, error
from iptserver.dataplane.listing import RouteLine
from iptserver.errors import DataplaneError, GeoIPError
from iptserver.policy.explain import explain, parse_query
from iptserver.schema.values import IPAddress

log = logging.getLogger(__name__)

MAX_QUERIES = 64  # explain queries per request


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def exits(request: web.Request) -> web.Response:
    """The running exits, each with its health ``state`` (up, down, unknown), ``via``:
    the exit its traffic leaves by now (itself, a failover exit) or "blocked", and
    ``link``: whether its tunnel interface is up (see ``ApiConfig.link``)."""
    config = request.app[CONFIG]
    plan = config.learner.state.plan
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


async def routes(request: web.Request) -> web.StreamResponse:
    """What is routed now: the DNS-learned entries the kernel holds (with the seconds
    left), then each rule's nets and countries. ``?exit=NAME`` (repeatable), ``?kind=``
    learned|net|country and ``?ip=ADDR`` (the routes that cover it) narrow the list.
    Needs the token when one is set: the learned entries carry the names clients asked.

    Streamed: a full learned set is a million entries, read a batch at a time."""
    authorize(request)
    config = request.app[CONFIG]
    wanted = set(request.query.getall("exit", []))
    kinds = set(request.query.getall("kind", [])) or set(ROUTE_KINDS)
    if unknown := kinds - set(ROUTE_KINDS):
        raise BadRequest(f"kind must be one of {', '.join(ROUTE_KINDS)}, not {sorted(unknown)}")
    ip = check_address(request.query["ip"], "ip") if "ip" in request.query else None
    state = config.learner.state
    batches: AsyncIterator[list[RouteLine]] | None = None
    first: list[RouteLine] = []
    if "learned" in kinds and config.installed is not None:
        marks = {e.mark for e in state.plan.exits if e.name in wanted} if wanted else None
        batches = config.installed(ip, marks)
        try:
            first = await anext(batches, [])
        except DataplaneError as e:
            return error(503, f"cannot read the kernel's sets: {e}")
    out = _JsonArray(await _stream_json(request))
    learned_by = config.learner.learned_by
    while first:
        for set_name, version, address, start in first:
            found = learned_by(set_name, version, address)
            names, by_rule = found if found is not None else ((), None)
            out.add_text(start + _by_answer(by_rule, names))
        await out.flush()
        assert batches is not None
        try:
            first = await anext(batches, [])
        except DataplaneError as e:  # the status is sent: the JSON is left unclosed
            log.warning("GET /v1/routes broken off: %s", e)
            return out.abort()
    country = _country(config, ip) if ip is not None else None
    for index, rule in enumerate(state.policy.schema.rules):
        if wanted and rule.exit not in wanted:
            continue
        base = {"exit": rule.exit, "weight": rule.weight, "rule": index}
        if "net" in kinds:
            for net in rule.nets:
                if ip is None or ip in net:
                    await out.add({"kind": "net", "net": str(net), **base})
        if "country" in kinds:
            for code in rule.countries:
                if ip is None or code == country:
                    await out.add({"kind": "country", "country": code, **base})
    return await out.close()


def _by_answer(rule: int | None, names: tuple[str, ...]) -> bytes:
    """The end of a learned entry's object: the answer that wrote it, if known."""
    if rule is None:
        return b'"rule": null, "names": []}'
    return f'"rule": {rule}, "names": {json.dumps(list(names))}}}'.encode()


async def _stream_json(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_type = "application/json"
    await response.prepare(request)
    return response


class _JsonArray:
    """A JSON array written in chunks, letting the event loop run between them (the
    answers the proxy holds must not wait behind a million routes)."""

    CHUNK = 100

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response
        self._pending: list[bytes] = []
        self._opened = False

    async def add(self, item: dict[str, Any]) -> None:
        self._pending.append(json.dumps(item).encode())
        if len(self._pending) >= self.CHUNK:
            await self.flush()

    def add_text(self, item: bytes) -> None:
        """An item already in JSON (the caller flushes)."""
        self._pending.append(item)

    async def flush(self) -> None:
        if self._pending:
            await self._response.write((b"," if self._opened else b"[") + b",".join(self._pending))
            self._opened = True
            self._pending = []
        await asyncio.sleep(0)

    def abort(self) -> web.StreamResponse:
        """End the connection with the array unclosed: the reader sees it broke off."""
        self._response.force_close()
        return self._response

    async def close(self) -> web.StreamResponse:
        await self.flush()
        await self._response.write(b"]" if self._opened else b"[]")
        await self._response.write_eof()
        return self._response


def _country(config: ApiConfig, ip: IPAddress) -> str | None:
    if config.geo is None:
        return None
    try:
        found = config.geo.lookup(ip)
    except GeoIPError:
        return None
    return found[0] if found is not None else None


async def decisions(request: web.Request) -> web.Response:
    """The learner's recent decisions, oldest first; ``?exit=NAME`` keeps one exit's.
    Needs the token when one is set (what clients resolved)."""
    authorize(request)
    wanted = request.query.getall("exit", [])
    result = []
    for names, decision in request.app[CONFIG].learner.recent:
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
    learner = config.learner
    names = [e.name for e in learner.state.plan.exits]
    names += sorted(set(learner.learned) - set(names))
    return web.json_response(
        {
            "answers": learner.answers,
            "learned": {name: learner.learned[name] for name in names},
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
        client = ipaddress.ip_address(request.query["from"]) if "from" in request.query else None
    except ValueError as e:
        raise BadRequest(str(e)) from None
    state = config.learner.state
    if state.loaded is None:
        return error(503, "the running policy does not know its file: explain is unavailable")
    return web.json_response(
        [
            explain(state.loaded, state.policy, query, config.geo, client).to_json()
            for query in queries
        ]
    )
