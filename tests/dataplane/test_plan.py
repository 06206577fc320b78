"""What the kernel should hold for a schema, computed without the kernel: exit slots,
sets per weight class and family, the never-diverted and DoH sets. No root needed."""

from __future__ import annotations

import ipaddress

import pytest

from iptserver.dataplane.plan import (
    RULE_PRIORITY_BASE,
    WELL_KNOWN_DOH,
    ExitPlan,
    KernelPlan,
    SetPlan,
    exit_plans,
    exits_from_json,
    exits_to_json,
    plan,
    set_name,
)
from iptserver.policy.core import PRIVATE_NETS
from iptserver.schema import parse_schema
from iptserver.schema.model import Route, Schema
from iptserver.schema.values import IPNetwork

MARK_BASE, TABLE_BASE = 0x100, 100  # the schema's defaults


def schema(text: str) -> Schema:
    return parse_schema(text, "s.yaml").schema


def net(text: str) -> IPNetwork:
    return ipaddress.ip_network(text)


def exits_yaml(*names: str) -> str:
    return "exits:\n" + "".join(f"  {n}: {{interface: wg-{n}}}\n" for n in names)


def slots(exits: tuple[ExitPlan, ...]) -> dict[str, tuple[int, int, int]]:
    """Each exit's (mark, table, rule priority), as offsets from their bases."""
    return {
        e.name: (e.mark - MARK_BASE, e.table - TABLE_BASE, e.priority - RULE_PRIORITY_BASE)
        for e in exits
    }


# -- exit slots -------------------------------------------------------------------------

# (id, exits before, exits after the reload, the slots after)
RELOADS = [
    pytest.param(("uk", "ru"), ("uk", "ru"), {"uk": 0, "ru": 1}, id="unchanged"),
    pytest.param(("uk", "ru"), ("ru", "uk"), {"ru": 1, "uk": 0}, id="reordered"),
    pytest.param(("uk", "ru", "us"), ("uk", "us"), {"uk": 0, "us": 2}, id="one-removed"),
    pytest.param(("uk", "ru", "us"), ("de", "us"), {"de": 0, "us": 2}, id="new-takes-lowest"),
    pytest.param(("uk",), ("de", "uk", "fr"), {"de": 1, "uk": 0, "fr": 2}, id="new-around-old"),
]


@pytest.mark.parametrize(("before", "after", "expected"), RELOADS)
def test_exits_keep_their_slots_across_reloads(
    before: tuple[str, ...], after: tuple[str, ...], expected: dict[str, int]
) -> None:
    previous = exit_plans(schema(exits_yaml(*before)))
    exits = exit_plans(schema(exits_yaml(*after)), previous)
    assert [e.name for e in exits] == list(after)  # file order, whatever the slots
    assert slots(exits) == {name: (slot, slot, slot) for name, slot in expected.items()}


def test_without_previous_exits_slots_follow_the_file() -> None:
    exits = exit_plans(schema(exits_yaml("uk", "ru", "us")))
    assert slots(exits) == {"uk": (0, 0, 0), "ru": (1, 1, 1), "us": (2, 2, 2)}


def test_previous_exits_from_the_state_file_keep_their_slots() -> None:
    previous = exits_from_json(exits_to_json(exit_plans(schema(exits_yaml("uk", "ru")))))
    exits = exit_plans(schema(exits_yaml("ru")), previous)
    assert slots(exits) == {"ru": (1, 1, 1)}


def test_exit_plans_round_trip_through_json() -> None:
    exits = exit_plans(schema(exits_yaml("uk") + "  direct: {interface: _DEFAULT}\n"))
    assert exits_from_json(exits_to_json(exits)) == exits


def test_marks_and_tables_set_in_the_schema_win_over_the_slot() -> None:
    text = (
        "exits:\n  uk: {interface: wg-uk, mark: 0x500, table: 900}\n  ru: {interface: wg-ru}\n"
        "kernel: {mark_base: 0x200, table_base: 300}\n"
    )
    uk, ru = exit_plans(schema(text))
    assert (uk.mark, uk.table, uk.priority) == (0x500, 900, RULE_PRIORITY_BASE)
    assert (ru.mark, ru.table, ru.priority) == (0x201, 301, RULE_PRIORITY_BASE + 1)


# -- exits: tunnels and the host gateway ------------------------------------------------

DEFAULTS = [
    pytest.param("default: direct\n", "direct", id="host-gateway-default"),
    pytest.param("default: uk\n", "uk", id="tunnel-default"),
    pytest.param("", None, id="no-default"),
]


@pytest.mark.parametrize(("line", "default"), DEFAULTS)
def test_default_exit_mark(line: str, default: str | None) -> None:
    kernel = plan(schema(exits_yaml("uk") + "  direct: {interface: _DEFAULT}\n" + line), {})
    expected = None if default is None else kernel.exit(default).mark
    assert kernel.default_mark == expected


def test_host_gateway_exit_routes_by_the_host_and_still_has_a_slot() -> None:
    text = exits_yaml("uk") + "  direct: {interface: _DEFAULT, via: 192.0.2.1}\n"
    uk, direct = plan(schema(text), {}).exits
    assert (uk.route, uk.interface, uk.via) == (Route.INTERFACE, "wg-uk", None)
    assert (direct.route, direct.interface) == (Route.HOST_GATEWAY, "_DEFAULT")
    assert direct.via == "192.0.2.1"
    assert slots((direct,)) == {"direct": (1, 1, 1)}


# -- sets per weight class and family ---------------------------------------------------

SET_NAMES = [
    pytest.param("d", 10, 4, "ipts-d10-4", id="learned-v4"),
    pytest.param("n", 0, 6, "ipts-n0-6", id="static-v6"),
    pytest.param("d", -5, 4, "ipts-dm5-4", id="negative-weight"),
]


@pytest.mark.parametrize(("kind", "weight", "family", "name"), SET_NAMES)
def test_set_name(kind: str, weight: int, family: int, name: str) -> None:
    assert set_name(kind, weight, family) == name


WEIGHTED = exits_yaml("uk", "ru") + (
    "rules:\n"
    "  - {exit: uk, domains: [example.org], weight: -5}\n"
    "  - {exit: ru, nets: [198.51.100.0/24, '2001:db8:1::/48'], weight: 10}\n"
    "  - {exit: uk, domains: [example.com]}\n"
)


def test_one_class_per_weight_highest_first_with_sets_per_family() -> None:
    kernel = plan(schema(WEIGHTED), {})
    assert [c.weight for c in kernel.classes] == [10, 0, -5]
    top = kernel.classes[0]
    assert [(s.name, s.family, s.learned, s.entries) for s in top.learned] == [
        ("ipts-d10-4", 4, True, ()),
        ("ipts-d10-6", 6, True, ()),
    ]
    ru = kernel.exit("ru").mark
    assert [(s.name, s.family, s.learned, s.entries) for s in top.static] == [
        ("ipts-n10-4", 4, False, ((net("198.51.100.0/24"), ru),)),
        ("ipts-n10-6", 6, False, ((net("2001:db8:1::/48"), ru),)),
    ]
    assert all(not s.entries for c in kernel.classes[1:] for s in c.static)


@pytest.mark.parametrize(
    ("weight", "family", "name"),
    [(10, 4, "ipts-d10-4"), (0, 6, "ipts-d0-6"), (-5, 4, "ipts-dm5-4")],
    ids=["top-v4", "zero-v6", "negative-v4"],
)
def test_learned_set_of_a_weight_and_family(weight: int, family: int, name: str) -> None:
    assert plan(schema(WEIGHTED), {}).learned_set(weight, family) == name


def test_learned_set_of_a_weight_no_rule_has() -> None:
    with pytest.raises(KeyError, match="no rule has weight 7"):
        plan(schema(WEIGHTED), {}).learned_set(7, 4)


def test_all_sets_listed_never_diverted_first() -> None:
    kernel = plan(schema(WEIGHTED + "dns: {block_doh: true}\n"), {})
    assert [s.name for s in kernel.sets] == [
        "ipts-private-4",
        "ipts-private-6",
        "ipts-doh-4",
        "ipts-doh-6",
        *(f"ipts-{k}{w}-{f}" for w in ("10", "0", "m5") for k in "dn" for f in (4, 6)),
    ]


# -- static entries: nets and countries -------------------------------------------------

COUNTRIES = {
    "RU": [net("203.0.113.0/24"), net("198.51.100.0/24"), net("2001:db8:2::/48")],
    "GB": [net("192.0.2.0/25")],
}

# (id, rules, the IPv4 static entries of weight 0 as (network, exit))
STATIC = [
    pytest.param(
        "  - {exit: ru, countries: [RU]}\n",
        [("198.51.100.0/24", "ru"), ("203.0.113.0/24", "ru")],
        id="country-networks-sorted",
    ),
    pytest.param(
        "  - {exit: uk, nets: [198.51.100.0/24]}\n  - {exit: ru, countries: [RU]}\n",
        [("198.51.100.0/24", "uk"), ("203.0.113.0/24", "ru")],
        id="shared-prefix-first-rule-nets",
    ),
    pytest.param(
        "  - {exit: ru, countries: [RU]}\n  - {exit: uk, nets: [198.51.100.0/24]}\n",
        [("198.51.100.0/24", "ru"), ("203.0.113.0/24", "ru")],
        id="shared-prefix-first-rule-country",
    ),
    pytest.param(
        "  - {exit: uk, nets: [198.51.100.0/25, 198.51.100.0/24]}\n",
        [("198.51.100.0/24", "uk"), ("198.51.100.0/25", "uk")],
        id="nested-prefixes-both-kept",
    ),
    pytest.param(
        "  - {exit: uk, countries: [GB, US]}\n",
        [("192.0.2.0/25", "uk")],
        id="country-without-networks",
    ),
]


@pytest.mark.parametrize(("rules", "expected"), STATIC)
def test_static_entries(rules: str, expected: list[tuple[str, str]]) -> None:
    kernel = plan(schema(exits_yaml("uk", "ru") + "rules:\n" + rules), COUNTRIES)
    (weight_class,) = kernel.classes
    v4, _ = weight_class.static
    assert v4.entries == tuple((net(n), kernel.exit(e).mark) for n, e in expected)


def test_country_networks_go_to_the_set_of_their_family() -> None:
    kernel = plan(schema(exits_yaml("ru") + "rules:\n  - {exit: ru, countries: [RU]}\n"), COUNTRIES)
    _, v6 = kernel.classes[0].static
    assert v6.entries == ((net("2001:db8:2::/48"), kernel.exit("ru").mark),)


def test_the_same_prefix_in_two_weight_classes_is_in_both() -> None:
    text = exits_yaml("uk", "ru") + (
        "rules:\n  - {exit: uk, nets: [198.51.100.0/24], weight: 1}\n"
        "  - {exit: ru, nets: [198.51.100.0/24]}\n"
    )
    kernel = plan(schema(text), {})
    assert [(c.weight, c.static[0].entries) for c in kernel.classes] == [
        (1, ((net("198.51.100.0/24"), kernel.exit("uk").mark),)),
        (0, ((net("198.51.100.0/24"), kernel.exit("ru").mark),)),
    ]


# -- never diverted, DoH ----------------------------------------------------------------


def contents(sets: tuple[SetPlan, SetPlan]) -> list[tuple[str, int, bool, set[object]]]:
    """Name, family, learned flag and entries (as a set: their order is not promised)."""
    return [(s.name, s.family, s.learned, set(s.entries)) for s in sets]


def test_never_diverted_holds_private_and_mesh_nets_without_marks() -> None:
    text = exits_yaml("uk") + "mesh: [198.18.0.0/16, '2001:db8:99::/48']\n"
    kernel = plan(schema(text), {})
    nets = [*PRIVATE_NETS, net("198.18.0.0/16"), net("2001:db8:99::/48")]
    assert contents(kernel.private) == [
        ("ipts-private-4", 4, False, {(n, 0) for n in nets if n.version == 4}),
        ("ipts-private-6", 6, False, {(n, 0) for n in nets if n.version == 6}),
    ]


DOH = [
    pytest.param("", None, id="not-blocking"),
    pytest.param("dns: {block_doh: true}\n", (), id="well-known"),
    pytest.param(
        "dns: {block_doh: true, doh_servers: [192.0.2.53/32, '2001:db8::53/128']}\n",
        ("192.0.2.53/32", "2001:db8::53/128"),
        id="well-known-and-more",
    ),
    pytest.param("dns: {doh_servers: [192.0.2.53/32]}\n", None, id="servers-but-not-blocking"),
]


@pytest.mark.parametrize(("line", "more"), DOH)
def test_doh_sets(line: str, more: tuple[str, ...] | None) -> None:
    kernel: KernelPlan = plan(schema(exits_yaml("uk") + line), {})
    if more is None:
        assert kernel.doh is None
        return
    assert kernel.doh is not None
    nets = [*WELL_KNOWN_DOH, *(net(n) for n in more)]
    assert contents(kernel.doh) == [
        ("ipts-doh-4", 4, False, {(n, 0) for n in nets if n.version == 4}),
        ("ipts-doh-6", 6, False, {(n, 0) for n in nets if n.version == 6}),
    ]


def test_ingress_and_export_table_are_carried_over() -> None:
    text = exits_yaml("uk") + "ingress: [wg-clients, eth1]\nkernel: {export_table: 4242}\n"
    kernel = plan(schema(text), {})
    assert (kernel.ingress, kernel.export_table) == (("wg-clients", "eth1"), 4242)


# -- send: policy -----------------------------------------------------------------------

POLICY_SCHEMA = """\
exits:
  uk: {interface: wg-uk}
  ru: {interface: wg-ru}
  direct: {interface: _DEFAULT}
ingress: [wg-office]
kernel: {export_table: 200}
rules:
  - {exit: direct, weight: 100, nets: [198.51.100.64/26]}
  - {exit: uk, nets: [198.51.100.0/25, 198.51.100.128/25, "2001:db8:1::/49"]}
  - {exit: uk, nets: [10.1.0.0/16, 198.51.100.7/32]}
  - {exit: ru, countries: [RU]}
  - {exit: direct, nets: [203.0.113.0/24]}
  - {exit: uk, sources: [10.77.1.0/24], nets: [192.0.2.0/24]}
nodes:
  entry: {entry: true}
  office: {subnets: [10.88.0.0/24], send: policy}
tunnels:
  wg-office:
    subnet: 10.99.0.0/30
    hosts: {entry: {expose: true}, office: {}}
"""


def test_send_policy_announces_each_tunnel_exits_nets_aggregated() -> None:
    """Rules' nets and country networks of tunnel exits, collapsed per exit; not the
    host gateway's, not private ones, not those of rules for some clients only."""
    countries = {"RU": [net("198.18.64.0/19"), net("198.18.96.0/19")]}
    found = plan(schema(POLICY_SCHEMA), countries)
    assert found.policy_table == 201
    assert [(str(r.network), r.interface) for r in found.policy_routes] == [
        ("198.18.64.0/18", "wg-ru"),
        ("198.51.100.0/24", "wg-uk"),  # the /25s, and the /32 inside them
        # 2001:db8:1::/48 not: FRR 8.4 imports no IPv6 table
    ]


def test_without_a_send_policy_node_nothing_is_announced() -> None:
    text = POLICY_SCHEMA.replace(", send: policy", "")
    found = plan(schema(text), {"RU": [net("198.18.64.0/19")]})
    assert found.policy_table is None and found.policy_routes == ()
