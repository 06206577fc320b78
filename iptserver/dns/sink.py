"""The proxy's one way out: hand each answer to the learner before releasing it.

The learner (iptserver.learning: policy core + kernel dataplane) implements this; the proxy
only calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from iptserver.schema.values import IPAddress


class AnswerSink(Protocol):
    async def learn(
        self,
        names: Sequence[str],
        addresses: Sequence[IPAddress],
        ttl: int,
        client: str | None = None,
    ) -> int:
        """Route the addresses of one answer before it is released.

        names: the query name then every CNAME target of the chain, lower case, no trailing dot.
        addresses: every A/AAAA address (and HTTPS/SVCB ipv4hint/ipv6hint) of the answer.
        ttl: the smallest TTL among the answer's records.
        client: who asked, ADDR:PORT or [ADDR6]:PORT (rules with sources apply to some).
        Returns the largest TTL the client may be given (the answer's TTLs are capped to it).
        Raises iptserver.errors.DataplaneError when the kernel could not be programmed.
        """
