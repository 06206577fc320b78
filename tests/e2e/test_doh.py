"""``dns.block_doh``: from the ingress, DNS over TLS/QUIC (port 853) and DNS over HTTPS to
known servers are rejected, so a client falls back to the DNS that iptserver routes by.

A second whoami server in "internet" listens on 443 and 853, so a connection that gets
through is answered and one that is rejected is refused at once (a TCP reset).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest

from iptserver.lab import Lab, LabError
from tests.e2e.conftest import BASE_SCHEMA, Iptservers

DOH_SERVER = "198.51.100.53"  # listed in the schema's dns.doh_servers
OTHER = "198.51.100.54"  # not a DoH server
SCHEMA = (
    BASE_SCHEMA.replace(
        '  upstream: ["203.0.113.53:53"]\n',
        f'  upstream: ["203.0.113.53:53"]\n  block_doh: true\n  doh_servers: ["{DOH_SERVER}/32"]\n',
    )
    + "default: direct\n"
)

# (destination, port, answered while blocking)
WAYS = [
    (DOH_SERVER, 443, False),  # DoH to a listed server
    (OTHER, 443, True),  # HTTPS elsewhere goes on
    (OTHER, 853, False),  # DoT anywhere
    (DOH_SERVER, 80, True),  # other ports of the DoH server go on
]


def answered(lab: Lab, address: str, port: int) -> bool:
    try:
        lab.seen("client", address, port, timeout=1.0)
    except LabError:
        return False
    return True


@pytest.fixture
def tls_ports(lab: Lab) -> Iterator[None]:
    """whoami on 443 and 853 in "internet", for the length of one test."""
    proc = lab.spawn(
        "internet",
        [sys.executable, "-m", "iptserver.lab.whoami", "--port", "443", "--port", "853"],
        name="whoami-tls",
    )
    deadline = time.monotonic() + 10
    while not (answered(lab, OTHER, 443) and answered(lab, OTHER, 853)):
        assert time.monotonic() < deadline, "whoami on 443/853 did not come up"
        time.sleep(0.05)
    yield
    proc.terminate()
    proc.wait(timeout=10)


def test_doh_and_dot_are_rejected_while_blocking(
    iptservers: Iptservers, lab: Lab, tls_ports: None
) -> None:
    assert all(answered(lab, address, port) for address, port, _ in WAYS), "before iptserver"
    daemon = iptservers.start(SCHEMA)
    for address, port, expected in WAYS:
        assert answered(lab, address, port) == expected, f"{address}:{port}"
    iptservers.stop(daemon)
    assert all(answered(lab, address, port) for address, port, _ in WAYS), "after stop"
