"""Two or more entries in one schema: checked where written, and each entry's daemon gets
the policy with its own interface names and addresses."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from iptserver.daemon import Options
from iptserver.errors import SchemaError
from iptserver.lists.store import ListReader
from iptserver.schema import load_schema, parse_schema
from iptserver.schema.entries import NotAnEntry, for_entry
from iptserver.schema.values import Endpoint
from tests.conftest import EXAMPLES

# entry2's tunnel ends have names of their own (as in the lab, where wireguard-go's
# sockets share one directory): the policy's names resolve through the mesh.
TWO = """\
exits:
  uk: {interface: wg_uk}
  direct: {interface: _DEFAULT}
ingress: [wg-clients, wg_office]
rules:
  - {exit: uk, domains: [co.uk]}
dns:
  listen: ["10.77.2.1:53", "10.99.0.9:53"]
kernel: {export_table: 200}
nodes:
  entry: {entry: true, endpoint: 198.18.0.1}
  entry2: {entry: true, endpoint: 198.18.8.1}
  uk: {endpoint: 198.18.1.1}
  office: {subnets: [10.88.0.0/24]}
tunnels:
  wg_uk:
    subnet: 10.99.0.0/30
    hosts: {entry: {}, uk: {expose: true}}
  wg_office:
    subnet: 10.99.0.8/30
    hosts: {entry: {expose: true}, office: {}}
  wy_uk:
    subnet: 10.99.1.0/30
    hosts: {entry2: {}, uk: {expose: 51830}}
  wy_office:
    subnet: 10.99.1.8/30
    hosts: {entry2: {expose: true}, office: {}}
clients:
  nodes: [entry, entry2]
  subnet: 10.77.2.0/24
  peers: {phone: {}}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SchemaError) as caught:
        parse_schema(text, "s.yaml")
    return [str(p) for p in caught.value.problems]


def test_the_example_with_two_entries_is_valid() -> None:
    schema = load_schema(EXAMPLES / "two-entries.yaml").schema
    assert [name for name, node in schema.nodes.items() if node.entry] == ["entry", "entry2"]
    # Same names on both entries: nothing to resolve.
    assert for_entry(schema, "entry2").exits == schema.exits


def test_each_entry_runs_the_policy_with_its_own_names_and_addresses() -> None:
    schema = parse_schema(TWO, "s.yaml").schema
    first = for_entry(schema, "entry")
    assert first.exits["uk"].interface == "wg_uk" and first.ingress == schema.ingress
    second = for_entry(schema, "entry2")
    assert second.exits["uk"].interface == "wy_uk"
    assert second.exits["direct"].interface == "_DEFAULT"
    assert second.ingress == ["wg-clients", "wy_office"]
    # The clients' address is the same on each entry; the office tunnel's is entry2's own.
    assert second.dns.listen == [
        Endpoint(ipaddress.ip_address("10.77.2.1"), 53),
        Endpoint(ipaddress.ip_address("10.99.1.9"), 53),
    ]
    assert [n for n, node in second.nodes.items() if node.entry] == ["entry2"]
    assert second.clients is not None and second.clients.entries == ("entry2",)
    assert second.rules == schema.rules
    with pytest.raises(NotAnEntry, match="node 'uk' is no entry of the schema"):
        for_entry(schema, "uk")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            (
                "  wy_uk:\n    subnet: 10.99.1.0/30\n"
                "    hosts: {entry2: {}, uk: {expose: 51830}}\n",
                "",
            ),
            [
                "s.yaml:2:19: exits.uk.interface: wg_uk on entry 'entry2': entry 'entry2' has no "
                "tunnel to node 'uk' (the node behind wg_uk on entry 'entry')"
            ],
        ),
        (
            ("  nodes: [entry, entry2]\n", "  nodes: [entry, uk]\n"),
            [
                "s.yaml:29:18: clients.nodes.1: node 'uk' is no entry (clients.nodes lists "
                "entries: entry: true)"
            ],
        ),
        (
            ("  nodes: [entry, entry2]\n", "  node: entry\n  nodes: [entry2]\n"),
            ["s.yaml:30:10: clients.nodes: give node (one) or nodes (several entries), not both"],
        ),
        (
            ("  nodes: [entry, entry2]\n", ""),
            [
                "s.yaml:29:3: clients.node: name the node the clients connect to (node: NAME, or "
                "nodes: [NAME, ...] for several entries)"
            ],
        ),
        (
            ("office: {subnets: [10.88.0.0/24]}", "office: {subnets: [10.88.0.0/24], send: all}"),
            [
                "s.yaml:14:43: nodes.office.send: send: all over tunnels to several entries "
                "(wg_office, wy_office) is not supported: the node's default would follow one "
                "tunnel whether or not its entry is alive; use send: learned or policy (OSPF "
                "moves those)"
            ],
        ),
    ],
    ids=[
        "exit-without-a-tunnel-on-entry2",
        "clients-on-a-non-entry",
        "node-and-nodes",
        "no-node",
        "send-all-to-two-entries",
    ],
)
def test_mistakes_with_two_entries_are_reported_where_written(
    change: tuple[str, str], expected: list[str]
) -> None:
    old, new = change
    assert old in TWO
    assert problems(TWO.replace(old, new)) == expected


def test_the_daemon_needs_node_with_several_entries(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(TWO, encoding="utf-8")
    with pytest.raises(SchemaError, match=r"several entries \(entry, entry2\): say which one"):
        Options(config=path).load(ListReader(None))
    with pytest.raises(SchemaError, match="--node: node 'office' is no entry"):
        Options(config=path, node="office").load(ListReader(None))
    loaded = Options(config=path, node="entry2").load(ListReader(None))
    assert loaded.schema.exits["uk"].interface == "wy_uk"


def test_an_ipv6_probe_needs_an_ipv6_tunnel_on_every_entry() -> None:
    text = TWO.replace(
        "  uk: {interface: wg_uk}\n",
        '  uk: {interface: wg_uk, health: {probe: ["[2001:db8::1]:80"]}}\n',
    ).replace("    subnet: 10.99.0.0/30\n", "    subnet: 10.99.0.0/30\n    subnet6: 'fd99::/64'\n")
    assert problems(text) == [
        "s.yaml:2:43: exits.uk.health.probe.0: 2001:db8::1 is IPv6 and tunnel 'wy_uk' (wy_uk) "
        "has no IPv6 address to probe from: give it a subnet6, or probe an IPv4 target"
    ]
