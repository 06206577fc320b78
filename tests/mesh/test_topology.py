"""Addresses, ports and peers worked out from the schema: both ends of a tunnel agree,
and the same schema always gives the same mesh."""

from __future__ import annotations

import ipaddress

from iptserver.mesh.topology import Mesh, mesh_of
from iptserver.schema import parse_schema

SCHEMA = """
exits: {uk: {interface: wg_uk}}
nodes:
  entry: {entry: true, endpoint: 198.18.0.1, subnets: [10.77.1.0/24]}
  uk: {endpoint: "2001:db8:e001::1", router_id: 10.255.0.2}
  office: {subnets: [10.88.0.0/24], ospf: false}
tunnels:
  wg_uk:
    subnet: 10.99.0.0/30
    hosts:
      entry: {expose: true}
      uk: {expose: 51900, masquerade: true, interface: wg_uk_x}
  wg_office:
    subnet: fd99::/127
    preshared_key: true
    hosts:
      office: {}
      entry: {expose: true, ospf_cost: 50}
clients:
  node: entry
  subnet: 10.77.2.0/24
  peers: {phone: {}, laptop: {address: 10.77.2.2}, tab: {}}
"""


def mesh(text: str = SCHEMA) -> Mesh:
    return mesh_of(parse_schema(text, "m.yaml").schema)


def test_both_ends_of_a_tunnel_agree() -> None:
    m = mesh()
    entry_uk, entry_office = m.node("entry").links
    (uk_entry,) = m.node("uk").links
    assert (entry_uk.interface, entry_uk.peer_interface) == ("wg_uk", "wg_uk_x")
    assert (uk_entry.interface, uk_entry.peer_interface) == ("wg_uk_x", "wg_uk")
    assert entry_uk.address == uk_entry.peer_address == ipaddress.ip_interface("10.99.0.1/30")
    assert uk_entry.address == entry_uk.peer_address == ipaddress.ip_interface("10.99.0.2/30")
    # expose: true listens on 51820 + the tunnel's position in the file
    assert (entry_uk.listen_port, entry_office.listen_port) == (51821, 51822)
    assert entry_uk.peer_endpoint == "[2001:db8:e001::1]:51900"
    assert uk_entry.peer_endpoint == "198.18.0.1:51821"
    assert uk_entry.masquerade and not entry_uk.masquerade
    # A /127 gives both of its addresses; the first host listed takes the first.
    (office_entry,) = m.node("office").links
    assert office_entry.address == ipaddress.ip_interface("fd99::/127")
    assert entry_office.address == ipaddress.ip_interface("fd99::1/127")
    assert entry_office.preshared and office_entry.preshared
    assert entry_office.ospf_cost == 50 and office_entry.ospf_cost is None


def test_the_side_that_dials_out_keeps_the_path_open() -> None:
    m = mesh()
    (office_entry,) = m.node("office").links
    assert office_entry.listen_port is None
    assert office_entry.peer_endpoint == "198.18.0.1:51822"
    assert office_entry.keepalive == 25
    # The listening side waits; nothing to keep alive.
    assert m.node("entry").links[1].keepalive is None
    assert m.node("entry").links[1].peer_endpoint is None


def test_table_is_off_where_frr_routes() -> None:
    m = mesh()
    assert m.node("entry").links[0].table == "off"
    assert m.node("office").links[0].table is None  # ospf: false -> wg-quick's own routes


def test_router_ids() -> None:
    m = mesh()
    assert str(m.node("entry").router_id) == "10.99.0.1"  # first IPv4 tunnel address
    assert str(m.node("uk").router_id) == "10.255.0.2"  # as written
    assert m.node("office").router_id is None  # IPv6-only tunnels: FRR picks one


def test_clients_get_addresses_in_order_around_the_ones_written() -> None:
    clients = mesh().clients
    assert clients is not None
    assert str(clients.address) == "10.77.2.1/24"
    assert [(p.name, str(p.address)) for p in clients.peers] == [
        ("phone", "10.77.2.3"),
        ("laptop", "10.77.2.2"),
        ("tab", "10.77.2.4"),
    ]
    assert clients.endpoint == "198.18.0.1:51820"
    assert [str(ip) for ip in clients.dns] == ["10.77.2.1"]


def test_nodes_only_named_by_tunnels_exist_too() -> None:
    """MRVPN2's schema has no nodes: section (they came from its inventory)."""
    m = mesh(
        "exits: {}\ntunnels:\n  t:\n    subnet: 10.99.0.0/31\n"
        "    hosts: {a: {expose: 51820}, b: {}}\n"
    )
    assert list(m.nodes) == ["a", "b"]
    assert m.node("b").links[0].peer_endpoint is None  # a has no known endpoint
    assert m.node("b").links[0].address == ipaddress.ip_interface("10.99.0.1/31")


def test_same_schema_same_mesh() -> None:
    assert mesh() == mesh()
    assert mesh().subnets == tuple(
        ipaddress.ip_network(n)
        for n in ("10.99.0.0/30", "fd99::/127", "10.77.1.0/24", "10.88.0.0/24", "10.77.2.0/24")
    )
