"""The built-in DNS proxy: forwards queries, routes each answer, then releases it.

    proxy = DnsProxy(DnsProxyConfig(listen=..., upstream=...), sink)
    await proxy.start(); ...; await proxy.stop()      # or: async with proxy: ...

The learner (iptserver.learning) implements :class:`AnswerSink`; the proxy never decides
routes itself.
"""

from __future__ import annotations

from iptserver.dns.config import DnsProxyConfig
from iptserver.dns.counters import DnsCounters
from iptserver.dns.listeners import DnsListenError
from iptserver.dns.proxy import DnsProxy
from iptserver.dns.sink import AnswerSink
from iptserver.dns.upstream import Transport
from iptserver.schema.values import Endpoint

__all__ = [
    "AnswerSink",
    "DnsCounters",
    "DnsListenError",
    "DnsProxy",
    "DnsProxyConfig",
    "Endpoint",
    "Transport",
]
