"""The mesh sections (nodes, tunnels, clients): what an operator gets wrong is reported
where it is written; MRVPN2's tunnels section is read as it is."""

from __future__ import annotations

import ipaddress

import pytest

from iptserver.errors import SchemaError
from iptserver.policy import Policy, Reason
from iptserver.schema import load_schema, parse_schema
from tests.conftest import EXAMPLES

HEAD = "exits:\n  uk: {interface: wg_uk}\nrules:\n  - {exit: uk, nets: [0.0.0.0/0]}\n"
NODES = "nodes:\n  entry: {entry: true, endpoint: 198.18.0.1}\n  uk: {endpoint: 198.18.1.1}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(SchemaError) as caught:
        parse_schema(text, "s.yaml")
    return [str(p) for p in caught.value.problems]


MISTAKES = [
    (
        "host-not-a-node",
        NODES + "tunnels:\n  t1:\n    subnet: 10.99.0.0/30\n"
        "    hosts:\n      entry: {expose: true}\n      ukk: {}\n",
        [
            "s.yaml:13:12: tunnels.t1.hosts.ukk: node 'ukk' is not defined under nodes; "
            "did you mean 'uk'?"
        ],
    ),
    (
        "port-twice",
        NODES
        + "tunnels:\n  t1:\n    subnet: 10.99.0.0/31\n    hosts: {entry: {expose: 51820}, uk: {}}\n"
        "clients:\n  node: entry\n  subnet: 10.77.2.0/24\n",
        [
            "s.yaml:13:3: clients.port: UDP port 51820 is already listened on by node 'entry' "
            "(tunnels.t1.hosts.entry.expose)"
        ],
    ),
    (
        "three-hosts",
        "tunnels:\n  t1:\n    subnet: 10.99.0.0/29\n    hosts: {a: {}, b: {}, c: {}}\n",
        ["s.yaml:8:12: tunnels.t1.hosts: a tunnel joins exactly two hosts, this one lists 3"],
    ),
    (
        "subnet-too-small",
        "tunnels:\n  t1:\n    subnet: 10.99.0.1/32\n    hosts: {a: {}, b: {}}\n",
        [
            "s.yaml:7:13: tunnels.t1.subnet: 10.99.0.1/32 has fewer than two host addresses "
            "(use a /30 or /31, or a /126 or /127)"
        ],
    ),
    (
        "subnet-host-bits",
        "tunnels:\n  t1:\n    subnet: 10.99.0.1/30\n    hosts: {a: {}, b: {}}\n",
        [
            "s.yaml:7:13: tunnels.t1.subnet: '10.99.0.1/30' has host bits set; "
            "did you mean 10.99.0.0/30?"
        ],
    ),
    (
        "interface-twice",
        "tunnels:\n  t1:\n    subnet: 10.99.0.0/31\n    hosts: {a: {interface: wg0}, b: {}}\n"
        "  t2:\n    subnet: 10.99.0.2/31\n    hosts: {a: {interface: wg0}, c: {}}\n",
        [
            "s.yaml:11:16: tunnels.t2.hosts.a: interface 'wg0' is already used on node 'a' by "
            "tunnels.t1.hosts.a"
        ],
    ),
    (
        "port-in-endpoint",
        "nodes:\n  a: {endpoint: '198.18.0.1:51820'}\n",
        [
            "s.yaml:6:17: nodes.a.endpoint: '198.18.0.1:51820': give the host only; the port "
            "comes from the peer's expose"
        ],
    ),
    (
        "bad-port",
        "tunnels:\n  t1:\n    subnet: 10.99.0.0/31\n    hosts: {a: {expose: 70000}, b: {}}\n",
        [
            "s.yaml:8:25: tunnels.t1.hosts.a.expose: expose must be a UDP port (1-65535), "
            "true or false, not 70000"
        ],
    ),
    (
        "bad-public-key",
        "tunnels:\n  t1:\n    subnet: 10.99.0.0/31\n    hosts: {a: {public_key: abc}, b: {}}\n",
        [
            "s.yaml:8:29: tunnels.t1.hosts.a.public_key: 'abc' is not a WireGuard key "
            "(44 characters of base64)"
        ],
    ),
    (
        "routeros-entry",
        "nodes:\n  a: {entry: true}\n  b: {entry: true, mikrotik: true}\n",
        ["s.yaml:7:14: nodes.b.entry: a RouterOS peer runs no iptserver: it cannot be an entry"],
    ),
    (
        "client-outside-subnet",
        NODES + "clients:\n  node: entry\n  subnet: 10.77.2.0/24\n"
        "  peers:\n    phone: {address: 10.77.3.2}\n    tab: {address: 10.77.2.1}\n",
        [
            "s.yaml:12:22: clients.peers.phone.address: 10.77.3.2 is not a host address of "
            "10.77.2.0/24",
            "s.yaml:13:20: clients.peers.tab.address: 10.77.2.1 is the node's own address in "
            "10.77.2.0/24",
        ],
    ),
    (
        "clients-no-room",
        NODES + "clients:\n  node: entry\n  subnet: 10.77.2.0/30\n  peers: {a: {}, b: {}}\n",
        ["s.yaml:10:11: clients.subnet: 10.77.2.0/30 has no room for 2 clients"],
    ),
    (
        "clients-node-unknown",
        NODES + "clients:\n  node: entri\n  subnet: 10.77.2.0/24\n",
        [
            "s.yaml:9:9: clients.node: node 'entri' is not defined under nodes; "
            "did you mean 'entry'?"
        ],
    ),
    (
        "unknown-host-key",
        "tunnels:\n  t1:\n    subnet: 10.99.0.0/31\n    hosts: {a: {masqerade: true}, b: {}}\n",
        [
            "s.yaml:8:17: tunnels.t1.hosts.a.masqerade: unknown key 'masqerade'; "
            "did you mean 'masquerade'?"
        ],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in MISTAKES], ids=[i for i, _, _ in MISTAKES]
)
def test_mesh_mistakes_are_reported_where_written(text: str, expected: list[str]) -> None:
    assert problems(HEAD + text) == expected


OFFICE = (
    "nodes:\n  entry: {entry: true, endpoint: 198.18.0.1}\n"
    "  office: {subnets: [10.88.0.0/24], send: all}\n"
    "tunnels:\n  wg_office:\n    subnet: 10.99.0.0/30\n"
    "    hosts:\n      entry: {expose: true}\n      office: {}\n"
)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (OFFICE, "add the entry's end of tunnel 'wg_office' (wg_office) to ingress"),
        (OFFICE.replace("entry: true,", "entry: true, send: all,"), "for offices"),
        (
            OFFICE.replace("subnets:", "mikrotik: true, subnets:"),
            "Linux nodes (FRR, wg-quick) only",
        ),
        (OFFICE.replace("subnets: [10.88.0.0/24], ", ""), "needs the node's subnets"),
        (
            "nodes:\n  entry: {entry: true}\n  branch: {}\n"
            "  office: {subnets: [10.88.0.0/24], send: all}\n"
            "tunnels:\n  wg_office:\n    subnet: 10.99.0.0/30\n"
            "    hosts:\n      branch: {expose: true}\n      office: {}\n",
            "a tunnel between 'office' and the entry",
        ),
        (
            OFFICE.replace("office: {}", "office: {allowed_nets: [10.77.0.0/16]}"),
            "allowed_nets must hold 0.0.0.0/0",
        ),
    ],
)
def test_send_all_mistakes(text: str, says: str) -> None:
    found = problems(HEAD + text)
    assert any(says in p for p in found), found


def test_send_all_with_its_tunnel_an_ingress_is_valid() -> None:
    parse_schema(HEAD + "ingress: [wg_office]\n" + OFFICE, "s.yaml")


POLICY = "ingress: [wg_office]\n" + OFFICE.replace("send: all", "send: policy")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            POLICY,
            "s.yaml:8:43: nodes.office.send: send: policy needs kernel.export_table (the "
            "entry announces routes over OSPF from routing tables FRR imports)",
        ),
        (
            POLICY + "kernel: {export_table: 252}\n",
            "s.yaml:15:24: kernel.export_table: send: policy puts its routes in table 253: "
            "FRR imports tables 1-252 only (set kernel.policy_table)",
        ),
        (
            POLICY + "kernel: {export_table: 200, policy_table: 200}\n",
            "s.yaml:15:43: kernel.policy_table: table 200 is kernel.export_table: give the "
            "policy routes another",
        ),
        (
            POLICY.replace("subnets:", "ospf: false, subnets:") + "kernel: {export_table: 200}\n",
            "s.yaml:8:56: nodes.office.send: send: policy takes its routes from OSPF: set "
            "ospf: true",
        ),
        (
            OFFICE.replace("send: all", "send: policy") + "kernel: {export_table: 200}\n",
            "s.yaml:7:43: nodes.office.send: send: policy: add the entry's end of tunnel "
            "'wg_office' (wg_office) to ingress, or the entry routes none of it",
        ),
    ],
)
def test_send_policy_mistakes(text: str, expected: str) -> None:
    assert problems(HEAD + text) == [expected]


def test_send_policy_takes_the_table_after_the_export_table() -> None:
    schema = parse_schema(HEAD + POLICY + "kernel: {export_table: 200}\n", "s.yaml").schema
    assert schema.policy_table() == 201
    chosen = parse_schema(
        HEAD + POLICY + "kernel: {export_table: 200, policy_table: 42}\n", "s.yaml"
    ).schema
    assert chosen.policy_table() == 42
    learned = parse_schema(
        HEAD + OFFICE.replace(", send: all", "") + "kernel: {export_table: 200}\n", "s.yaml"
    )
    assert learned.schema.policy_table() is None


def test_tunnel_clients_and_node_subnets_are_never_diverted() -> None:
    text = (
        HEAD
        + NODES.replace("endpoint: 198.18.1.1}", "subnets: [198.51.100.0/28]}")
        + (
            "tunnels:\n  t1:\n    subnet: 10.99.0.0/30\n    hosts: {entry: {}, uk: {}}\n"
            "clients:\n  node: entry\n  subnet: 100.100.0.0/24\n"
        )
    )
    policy = Policy(parse_schema(text, "s.yaml").schema)
    for ip in ("10.99.0.2", "198.51.100.5", "100.100.0.9"):
        assert policy.decide_ip(ipaddress.ip_address(ip)).reason is Reason.PRIVATE, ip
    assert policy.decide_ip(ipaddress.ip_address("198.51.100.20")).exit == "uk"


def test_mrvpn2_tunnels_section_is_read_as_written() -> None:
    schema = load_schema(EXAMPLES / "legacy" / "mrvpn2-schema.yaml").schema
    tunnel = schema.tunnels["wg_uk"]
    assert str(tunnel.subnet) == "10.9.20.0/24"
    assert list(tunnel.hosts) == ["exit-uk", "entry"]
    assert tunnel.hosts["exit-uk"].expose == 55824
    assert tunnel.hosts["entry"].compose_service == "firezone"
    assert tunnel.hosts["entry"].table == "off"


def test_mrvpn2_hosts_directly_under_the_tunnel() -> None:
    """The seed's form: a tunnel's hosts without a hosts: key."""
    text = (
        "tunnels:\n  wg_uk:\n    subnet: 10.9.20.0/30\n    mrvpn-entry:\n"
        "      allowed_nets: [0.0.0.0/0]\n      compose_service: firezone\n"
        "      table: off\n    exit-uk: {expose: 55824}\n"
        "routing:\n  routes:\n    - {interface: wg_uk, static: [0.0.0.0/0]}\n"
    )
    schema = parse_schema(text, "m.yaml").schema
    assert list(schema.tunnels["wg_uk"].hosts) == ["mrvpn-entry", "exit-uk"]
    # YAML 1.1 reads a bare `off` as false: wg-quick's word is meant.
    assert schema.tunnels["wg_uk"].hosts["mrvpn-entry"].table == "off"
    with pytest.raises(SchemaError) as caught:
        parse_schema(text.replace("table: off", "table: [1]"), "m.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "m.yaml:7:14: tunnels.wg_uk.mrvpn-entry.table: Input should be a valid string (got [1])"
    ]


def test_mrvpn2_tunnel_mistakes_name_the_legacy_path() -> None:
    text = (
        "tunnels:\n  wg_uk:\n    mrvpn-entry: {masquerade: maybe}\n    exit-uk: {}\n"
        "routing:\n  routes:\n    - {interface: wg_uk, static: [0.0.0.0/0]}\n"
    )
    with pytest.raises(SchemaError) as caught:
        parse_schema(text, "m.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "m.yaml:3:5: tunnels.wg_uk.subnet: is required",
        "m.yaml:3:31: tunnels.wg_uk.mrvpn-entry.masquerade: Input should be a valid boolean "
        "(got 'maybe')",
    ]
