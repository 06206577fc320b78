"""The lab: a whole VPN mesh in network namespaces, for the demo, tests and benchmarks.

``with Lab() as lab: ...`` builds client, entry, uk/ru/us exits and internet (with a DNS
authority and whoami servers) and tears it all down afterwards; see ``topology``.
"""

from __future__ import annotations

from iptserver.lab.errors import CommandError, LabError, ProbeError
from iptserver.lab.probes import DnsAnswer, HeldConnection
from iptserver.lab.state import reap_stale_labs
from iptserver.lab.topology import NODES, Lab

__all__ = [
    "NODES",
    "CommandError",
    "DnsAnswer",
    "HeldConnection",
    "Lab",
    "LabError",
    "ProbeError",
    "reap_stale_labs",
]
