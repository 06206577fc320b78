"""The DNS proxy: what happens to one query, from the client's bytes to the reply.

For each query: read it (FORMERR, NOTIMP or drop if it cannot be forwarded), answer
the DoH canary locally, forward to the upstreams, hand the answer's names and
addresses to the :class:`~iptserver.dns.sink.AnswerSink`, cap the TTLs to what the
sink allows, and only then reply. The sockets, framing and limits are in
:mod:`iptserver.dns.listeners`: one task per query, so a slow upstream or sink holds up
only its own queries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType

from dnslib import QTYPE, RCODE

from iptserver.dns.answers import Learned, cap_ttls, learned_from, truncate, udp_limit, with_id
from iptserver.dns.clients import ClientGate
from iptserver.dns.config import DnsProxyConfig
from iptserver.dns.counters import DnsCounters
from iptserver.dns.listeners import DnsListenError, Listeners
from iptserver.dns.queries import DOH_CANARY, BadQuery, own_reply, read_query
from iptserver.dns.sink import AnswerSink
from iptserver.dns.throttle import ThrottledLog
from iptserver.dns.upstream import Transport, UpstreamAnswer, UpstreamClient, UpstreamFailure
from iptserver.dns.wire import RCODE_NOERROR, Message, Question, WireError
from iptserver.errors import DataplaneError, SetFullError
from iptserver.schema.values import Endpoint

log = logging.getLogger(__name__)

__all__ = ["DnsListenError", "DnsProxy"]


class DnsProxy:
    """``async with DnsProxy(config, sink) as proxy: ...`` or ``start()`` / ``stop()``."""

    def __init__(
        self,
        config: DnsProxyConfig,
        sink: AnswerSink,
        *,
        counters: DnsCounters | None = None,
        clients: ClientGate | None = None,
    ) -> None:
        self.config = config
        self.counters = DnsCounters() if counters is None else counters
        self._sink = sink
        self._upstream = UpstreamClient(
            config.upstream_endpoints, try_timeout=config.upstream_timeout, counters=self.counters
        )
        self._log = ThrottledLog(log)
        self._listeners = Listeners(config, self.answer, self.counters, clients)
        self._running = False

    # -- lifecycle ------------------------------------------------------------------

    @property
    def addresses(self) -> tuple[tuple[Transport, Endpoint], ...]:
        """Where the proxy listens (ports as bound, so port 0 shows the one chosen)."""
        return self._listeners.addresses

    @property
    def clients(self) -> ClientGate:
        """Who may ask, and how fast (default: this host only, no rate limit)."""
        return self._listeners.clients

    @clients.setter
    def clients(self, gate: ClientGate) -> None:
        self._listeners.clients = gate

    async def start(self) -> None:
        """Listen on every configured address; raises :class:`DnsListenError` if one fails
        (the addresses already bound are released again)."""
        if self._running:
            return
        await self._listeners.start()
        self._running = True
        log.info(
            "DNS proxy listening on %s (UDP and TCP), forwarding to %s",
            ", ".join(str(e) for t, e in self.addresses if t is Transport.UDP),
            ", ".join(str(e) for e in self.config.upstream_endpoints),
        )

    async def stop(self) -> None:
        """Close the listening sockets and cancel the queries and connections in flight."""
        was_running = self._running
        self._running = False
        await self._listeners.close()
        self._upstream.close()
        if was_running:
            log.info("DNS proxy stopped")

    async def __aenter__(self) -> DnsProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- one query ------------------------------------------------------------------

    async def answer(self, wire: bytes, client: str, transport: Transport) -> bytes | None:
        """The reply to one client packet, or None to send nothing. Bad input never raises."""
        self.counters.queries += 1
        try:
            query = read_query(wire)
        except BadQuery as bad:
            return self._bad_query(wire, bad, client, transport)
        question = query.question
        assert question is not None  # read_query accepts one question only
        if question.name == DOH_CANARY:
            self.counters.canary += 1
            log.debug("%s asked for the DoH canary %s: NXDOMAIN", client, DOH_CANARY)
            return self._reply(own_reply(wire, RCODE.NXDOMAIN, query.header, query))
        loop = asyncio.get_running_loop()
        try:
            upstream = await self._upstream.query(
                wire,
                question,
                tcp=transport is Transport.TCP,
                deadline=loop.time() + self.config.timeout,
            )
        except UpstreamFailure as e:
            self._log.warning(
                "servfail",
                "SERVFAIL to %s for %s: no upstream answered (%s)",
                client,
                _what(question),
                e,
            )
            return self._servfail(wire, query)
        reply = await self._routed(upstream, client, question)
        if reply is None:
            return self._servfail(wire, query)
        if transport is Transport.UDP and len(reply) > (limit := udp_limit(query)):
            self.counters.truncated += 1
            log.debug(
                "%s: %d-byte answer to %s is over its %d: TC",
                client,
                len(reply),
                _what(question),
                limit,
            )
            reply = truncate(reply, upstream.message)
        return self._reply(with_id(reply, query.header.id))

    async def _routed(
        self, upstream: UpstreamAnswer, client: str, question: Question
    ) -> bytes | None:
        """The upstream's answer once the sink has routed its addresses, TTLs capped to
        what the sink allows; None when it must not be released (SERVFAIL instead)."""
        reply, message = upstream.wire, upstream.message
        if message.header.rcode != RCODE_NOERROR:
            return reply
        try:
            learned = learned_from(reply, message)
        except WireError as e:
            self.counters.upstream_errors += 1
            self._log.warning(
                "unreadable",
                "SERVFAIL to %s for %s: upstream %s sent an answer that cannot be read "
                "(%s), so it cannot be routed",
                client,
                _what(question),
                upstream.upstream,
                e,
            )
            return None
        if not learned.addresses:
            return reply
        cap = await self._learn(learned, client)
        if cap is None:
            if self.config.fail_closed:
                return None
            cap = self.config.fail_open_ttl
        if log.isEnabledFor(logging.DEBUG):  # the arguments cost more than the check
            log.debug(
                "%s: %s -> %s via %s, TTL cap %d",
                client,
                " -> ".join(learned.names),
                _some(learned.addresses),
                upstream.upstream,
                cap,
            )
        return cap_ttls(reply, message, cap)

    async def _learn(self, learned: Learned, client: str) -> int | None:
        """The sink's TTL cap, or None when it failed (counted and logged)."""
        try:
            async with asyncio.timeout(self.config.sink_timeout):
                cap = await self._sink.learn(learned.names, learned.addresses, learned.ttl, client)
                cap = max(0, int(cap))
        except Exception as e:
            self._sink_failed(e, learned.names[0], client)
            return None
        self.counters.learned += 1
        return cap

    def _sink_failed(self, error: Exception, name: str, client: str) -> None:
        """Count and log a sink that could not route the answer for ``name``."""
        self.counters.sink_errors += 1
        if self.config.fail_closed:
            outcome = "fail-closed: answered SERVFAIL"
        else:
            outcome = f"fail-open: answered anyway, TTL at most {self.config.fail_open_ttl}s"
        if isinstance(error, TimeoutError):
            self.counters.sink_timeouts += 1
            self._log.warning(
                "sink-timeout",
                "routing the answer for %s (client %s) took over %.1fs (%s); is the kernel "
                "or netlink busy? sink_timeout sets the bound",
                name,
                client,
                self.config.sink_timeout,
                outcome,
            )
        elif isinstance(error, DataplaneError):
            if isinstance(error, SetFullError):
                self.counters.set_full += 1
            message = "could not route the answer for %s (client %s): %s (%s)"
            self._log.warning("sink-error", message, name, client, error, outcome)
        else:
            self._log.error(
                "sink-bug",
                "the answer sink failed on %s (client %s) in a way it should not: a bug (%s)",
                name,
                client,
                outcome,
                exc_info=error,
            )

    def _bad_query(
        self, wire: bytes, bad: BadQuery, client: str, transport: Transport
    ) -> bytes | None:
        if bad.rcode is None or bad.header is None:
            self.counters.dropped += 1
            self._log.info(
                "dropped",
                "dropped %d bytes from %s over %s: %s",
                len(wire),
                client,
                transport.value,
                bad.reason,
            )
            return None
        if bad.rcode == RCODE.NOTIMP:
            self.counters.notimp += 1
        else:
            self.counters.formerr += 1
        name = RCODE.get(bad.rcode, bad.rcode)
        message = "%s to %s over %s: %s"
        self._log.info("bad-query", message, name, client, transport.value, bad.reason)
        return self._reply(own_reply(wire, bad.rcode, bad.header, bad.message))

    def _servfail(self, wire: bytes, query: Message) -> bytes:
        self.counters.servfail += 1
        return self._reply(own_reply(wire, RCODE.SERVFAIL, query.header, query))

    def _reply(self, wire: bytes) -> bytes:
        self.counters.answers += 1
        return wire


def _what(question: Question) -> str:
    """The question for a log line: ``name TYPE``."""
    return f"{question.name or '.'} {QTYPE.get(question.qtype, question.qtype)}"


def _some(items: Sequence[object], shown: int = 8) -> str:
    """The first ``shown`` items for a log line, and how many more there are."""
    text = ", ".join(map(str, items[:shown]))
    return text + (f" and {len(items) - shown} more" if len(items) > shown else "")
