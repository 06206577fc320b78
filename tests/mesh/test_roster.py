"""The roster of clients added through the API: names and keys checked, addresses from
the subnet's end, the file read back as written and refused when it is not ours."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from iptserver.mesh.roster import (
    Enrolled,
    RosterError,
    check_request,
    clashes,
    free_address,
    from_json,
    to_json,
)
from iptserver.mesh.topology import Clients, mesh_of
from iptserver.schema import parse_schema

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(32)).decode()


def clients(
    subnet: str = "10.77.2.0/29", peers: str = "{phone: {}}", endpoint: str = ""
) -> Clients:
    text = f"""
exits: {{uk: {{interface: wg_uk}}}}
nodes:
  entry: {{entry: true{endpoint}}}
clients:
  node: entry
  subnet: {subnet}
  peers: {peers}
"""
    found = mesh_of(parse_schema(text, "r.yaml").schema).clients
    assert found is not None
    return found


REACHABLE = ", endpoint: 198.18.0.1"


def enrolled(name: str, address: str, key: str = KEY) -> Enrolled:
    return Enrolled(name, ipaddress.ip_address(address), key, keyed_here=True)


def test_addresses_come_from_the_end_of_the_subnet_and_run_out_clearly() -> None:
    spec = clients()  # .1 the node, .2 the schema's phone; .3-.6 for the API
    given: list[Enrolled] = []
    for expected in ("10.77.2.6", "10.77.2.5", "10.77.2.4", "10.77.2.3"):
        address = free_address(spec, given)
        assert str(address) == expected
        given.append(enrolled(f"c{expected[-1]}", expected))
    with pytest.raises(RosterError, match=r"subnet 10\.77\.2\.0/29 is full") as full:
        free_address(spec, given)
    assert full.value.status == 409


def test_an_ipv6_subnet_gives_its_last_address() -> None:
    assert str(free_address(clients("fd77:2::/120"), [])) == "fd77:2::ff"


@pytest.mark.parametrize(
    ("name", "key", "status", "says"),
    [
        ("-x", None, 400, "client name"),
        ("a" * 65, None, 400, "client name"),
        ("phone", None, 409, "in the schema"),
        ("tab", None, 409, "exists already"),
        ("new", "short", 400, "not a WireGuard key"),
        ("new", KEY, 409, "'tab'"),
    ],
)
def test_requests_that_cannot_be_added(name: str, key: str | None, status: int, says: str) -> None:
    with pytest.raises(RosterError, match=says) as refused:
        check_request(clients(endpoint=REACHABLE), [enrolled("tab", "10.77.2.6")], name, key)
    assert refused.value.status == status


def test_a_new_name_and_key_pass() -> None:
    check_request(clients(endpoint=REACHABLE), [enrolled("tab", "10.77.2.6")], "new", OTHER_KEY)
    check_request(clients(endpoint=REACHABLE), [], "new", None)


def test_clients_need_an_endpoint_to_dial() -> None:
    with pytest.raises(RosterError, match=r"set nodes\.entry\.endpoint") as refused:
        check_request(clients(), [], "new", None)
    assert refused.value.status == 409


def test_a_schema_that_took_an_added_name_or_address_is_said() -> None:
    spec = clients(peers="{phone: {}, tab: {address: 10.77.2.6}}")
    added = [enrolled("phone", "10.77.2.5"), enrolled("x", "10.77.2.6"), enrolled("y", "10.9.0.1")]
    assert clashes(spec, added) == [
        "client 'phone' was added by the API and is now in the schema too",
        "client 'x' has 10.77.2.6, which the schema now gives 'tab'",
        "client 'y' has 10.9.0.1, outside 10.77.2.0/29 now",
    ]


def test_the_file_reads_back_as_written_and_a_foreign_one_is_refused() -> None:
    v6 = Enrolled("pc", ipaddress.ip_address("fd77::9"), OTHER_KEY, keyed_here=False)
    written = [enrolled("tab", "10.77.2.6"), v6]
    assert from_json(to_json(written)) == written
    with pytest.raises(ValueError, match="not a list"):
        from_json("{}")
    with pytest.raises(ValueError, match="client 1"):
        from_json('[{"name": "x", "address": "10.0.0.300", "public_key": "k", "keyed_here": true}]')
