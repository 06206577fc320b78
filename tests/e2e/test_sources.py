"""Per-client rules (``sources``): two clients on the entry's client network resolve the
same name at once, and their first connections leave by different exits, as the far
side sees; ``explain --from`` agrees. IPv4 and IPv6.

The client node gets a second address (10.77.1.3, fd77:1::3) for the second client;
each probe's socket is bound to the client's address.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iptserver.cli import main
from iptserver.lab import Lab, probes
from iptserver.lab.addresses import SEEN_AS
from iptserver.lab.entry import ENTRY_DNS
from iptserver.lab.node_config import CLIENT_LAN
from tests.e2e.conftest import BASE_SCHEMA, Iptservers, Running, bound
from tests.e2e.entry_kernel import entry_state, ours

FIRST = {4: "10.77.1.2", 6: "fd77:1::2"}  # the lab's client: no rule names it
SECOND = {4: "10.77.1.3", 6: "fd77:1::3"}
SCHEMA = (
    BASE_SCHEMA.replace('listen: ["10.77.1.1:53"]', 'listen: ["10.77.1.1:53", "[fd77:1::1]:53"]')
    + """
default: direct
rules:
  - exit: ru
    sources: [10.77.1.3, "fd77:1::3"]
    domains: ["=shop.ru"]
    nets: [203.0.113.77/32]
  - exit: uk
    domains: [shop.ru]
"""
)


@pytest.fixture
def second_client(lab: Lab) -> Iterator[None]:
    lab.ip_batch(
        "client",
        [
            f"addr add {SECOND[4]}/24 dev {CLIENT_LAN}",
            f"addr add {SECOND[6]}/64 dev {CLIENT_LAN} nodad",
        ],
    )
    yield
    lab.ip_batch(
        "client",
        [f"addr del {SECOND[4]}/24 dev {CLIENT_LAN}", f"addr del {SECOND[6]}/64 dev {CLIENT_LAN}"],
    )


def resolve(lab: Lab, source: str, name: str, rtype: str) -> str:
    server = ENTRY_DNS if rtype == "A" else "fd77:1::1"
    answer = probes.dns_query(bound(lab, source), server, name, rtype)
    found = [value for _, kind, value, _ in answer.records if kind == rtype]
    assert found, f"no {rtype} for {name} asked from {source}: {answer}"
    return found[0]


def way(lab: Lab, source: str, address: str) -> str:
    """Which exit a connection from ``source`` left by, by the far side's view."""
    seen = probes.whoami(bound(lab, source), address, 80, 3.0)["seen"]
    return SEEN_AS[ipaddress.ip_address(seen)]


def explained(daemon: Running, source: str, query: str) -> dict[str, Any]:
    out = io.StringIO()
    argv = ["explain", str(daemon.schema), query, "--from", source, "--json"]
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--geoip", str(daemon.mmdb)]) == 0
    found: dict[str, Any] = json.loads(out.getvalue())[0]
    return found


@pytest.mark.parametrize("family", [4, 6])
def test_two_clients_resolving_one_name_leave_by_their_own_exits(
    iptservers: Iptservers, second_client: None, family: int
) -> None:
    daemon = iptservers.start(SCHEMA)
    lab = daemon.lab
    rtype = "A" if family == 4 else "AAAA"
    # Both ask before either connects: the kernel holds both answers' entries at once.
    first = resolve(lab, FIRST[family], "shop.ru", rtype)
    second = resolve(lab, SECOND[family], "shop.ru", rtype)
    assert first == second
    assert way(lab, FIRST[family], first) == "uk"
    assert way(lab, SECOND[family], second) == "ru"
    assert way(lab, FIRST[family], first) == "uk", "the other client's entry changed nothing"
    for source, expected in ((FIRST[family], "uk"), (SECOND[family], "ru")):
        assert explained(daemon, source, f"shop.ru={first}")["exit"] == expected


def test_a_net_rule_with_sources_routes_its_clients_only(
    iptservers: Iptservers, second_client: None
) -> None:
    daemon = iptservers.start(SCHEMA)
    lab = daemon.lab
    assert way(lab, SECOND[4], "203.0.113.77") == "ru"
    assert way(lab, FIRST[4], "203.0.113.77") == "direct"
    assert explained(daemon, SECOND[4], "203.0.113.77")["exit"] == "ru"
    assert explained(daemon, FIRST[4], "203.0.113.77")["exit"] == "direct"

    # A reload that takes the sources away: the class's chain and sets go (the teardown
    # checks nothing is left), and the rule applies to every client.
    assert any("IPTSERVER-C0" in line for line in ours(entry_state(lab)))
    iptservers.rewrite(daemon, SCHEMA.replace('    sources: [10.77.1.3, "fd77:1::3"]\n', ""))
    assert daemon.reload(), daemon.log
    left = [line for line in ours(entry_state(lab)) if "IPTSERVER-C" in line or "ipts-c" in line]
    assert not left, left
    assert way(lab, FIRST[4], "203.0.113.77") == "ru"
    assert way(lab, SECOND[4], "203.0.113.77") == "ru"


def test_a_rule_with_sources_takes_its_domains_from_a_list(
    iptservers: Iptservers, second_client: None, tmp_path: Path
) -> None:
    (tmp_path / "ru.txt").write_text("# a list\nshop.ru\n")
    schema = iptservers.schema(
        BASE_SCHEMA
        + f"""
default: direct
rules:
  - exit: ru
    sources: [10.77.1.3]
    lists: [{{file: {tmp_path / "ru.txt"}}}]
"""
    )
    daemon = iptservers.start(schema)
    lab = daemon.lab
    address = resolve(lab, SECOND[4], "shop.ru", "A")
    assert way(lab, SECOND[4], address) == "ru"
    assert resolve(lab, FIRST[4], "shop.ru", "A") == address
    assert way(lab, FIRST[4], address) == "direct"
