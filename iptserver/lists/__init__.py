"""Rule lists: other people's files of domains and networks, as schema patterns.

Pure parsing: text (or bytes) in, :class:`ParsedList` out: the domain patterns in the
schema's own :class:`~iptserver.schema.values.DomainPattern` kinds, the networks, the
line each came from, and a :class:`ListProblem` for every line that was skipped.
Fetching, caching and refreshing lists belong to the daemon.

One module per format family: ``plain`` (domains, hosts files, CIDRs), ``dnsmasq``,
``v2fly``, ``singbox``; ``patterns`` maps their entry kinds onto the schema's;
``formats`` picks the parser (``format: auto``).
"""

from __future__ import annotations

from iptserver.lists.formats import detect_format, parse_list
from iptserver.lists.model import ListFormat, ListProblem, Origin, ParsedList
from iptserver.lists.v2fly import IncludeReader

__all__ = [
    "IncludeReader",
    "ListFormat",
    "ListProblem",
    "Origin",
    "ParsedList",
    "detect_format",
    "parse_list",
]
