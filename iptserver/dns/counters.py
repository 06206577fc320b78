"""What the proxy has done, as plain integers the daemon can export as metrics."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(slots=True)
class DnsCounters:
    """Monotonic counts since the proxy was created (Prometheus counters map 1:1)."""

    queries: int = 0  # datagrams and TCP frames received from clients
    answers: int = 0  # replies sent to clients, whatever their rcode
    formerr: int = 0  # queries that could not be read, answered FORMERR
    notimp: int = 0  # opcodes other than QUERY, answered NOTIMP
    dropped: int = 0  # packets not answered: no readable header, a response, overload
    servfail: int = 0  # SERVFAIL sent: no upstream answered, or the sink failed closed
    canary: int = 0  # use-application-dns.net answered NXDOMAIN locally
    upstream_timeouts: int = 0  # tries that got no matching reply in time
    upstream_errors: int = 0  # tries refused/reset/unreadable, and rejected reply packets
    upstream_tcp_retries: int = 0  # truncated UDP answers fetched again over TCP
    learned: int = 0  # answers the sink routed
    sink_errors: int = 0  # answers the sink failed to route (DataplaneError, timeout, bug)
    sink_timeouts: int = 0  # of sink_errors, those that took longer than sink_timeout
    set_full: int = 0  # of sink_errors, those whose learned set was full (kernel.max_learned)
    truncated: int = 0  # UDP replies cut to TC for the client's size limit
    tcp_refused: int = 0  # TCP connections closed at once: max_tcp_clients (per client) reached
    refused: int = 0  # queries (and TCP connections) from addresses that are not clients
    rate_limited: int = 0  # client queries over dns.rate_limit (UDP: dropped, TCP: REFUSED)

    def snapshot(self) -> dict[str, int]:
        return dataclasses.asdict(self)
