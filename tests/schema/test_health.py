"""The health part of the schema: what is accepted, and every mistake at FILE:LINE:COL."""

from __future__ import annotations

import ipaddress

import pytest

from iptserver.errors import SchemaError
from iptserver.schema import parse_schema
from iptserver.schema.health import BLOCK

HEAD = "exits:\n  ru: {interface: wg-ru}\n  direct: {interface: _DEFAULT}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(SchemaError) as caught:
        parse_schema(text, "s.yaml")
    return [str(p) for p in caught.value.problems]


def test_defaults_and_values() -> None:
    text = (
        HEAD + "  uk:\n    interface: wg-uk\n    on_down: [ru, direct]\n"
        "    health: {probe: ['198.51.100.80:80'], fall: 4}\n"
        "rules: []\nhealth: {webhook: 'https://ops.example.org/hook'}\n"
    )
    schema = parse_schema(text).schema
    uk = schema.exits["uk"]
    assert uk.failover == ("ru", "direct")
    assert uk.health is not None
    assert uk.health.probe == [(ipaddress.ip_address("198.51.100.80"), 80)]
    assert (uk.health.interval, uk.health.timeout, uk.health.fall, uk.health.rise) == (
        1.0,
        0.5,
        4,
        3,
    )
    assert uk.health.handshake_max == 180
    six = parse_schema(text.replace("'198.51.100.80:80'", "'[2001:db8::1]:80'")).schema
    assert six.exits["uk"].health is not None
    assert six.exits["uk"].health.probe == [(ipaddress.ip_address("2001:db8::1"), 80)]
    assert schema.exits["ru"].on_down == BLOCK and schema.exits["ru"].health is None
    assert schema.health.webhook == "https://ops.example.org/hook"
    assert parse_schema(HEAD + "rules: []\n").schema.health.webhook is None


WATCHED = "    health: {probe: ['198.51.100.80:80']}\n"

# (id, file text, the problems expected, exactly)
MALFORMED = [
    (
        "failover-undefined-self-twice",
        HEAD + "  uk:\n    interface: wg-uk\n    on_down: [us, uk, ru, ru]\n" + WATCHED,
        [
            "s.yaml:6:15: exits.uk.on_down.0: exit 'us' is not defined (defined: direct, ru, uk)",
            "s.yaml:6:19: exits.uk.on_down.1: an exit cannot fail over to itself",
            "s.yaml:6:27: exits.uk.on_down.3: exit 'ru' is listed twice",
        ],
    ),
    (
        "on-down-word",
        HEAD + "  uk:\n    interface: wg-uk\n    on_down: failover\n" + WATCHED,
        [
            "s.yaml:6:14: exits.uk.on_down: must be 'block' or a list of exit names to fail "
            "over to, in order (got 'failover')"
        ],
    ),
    (
        "failover-without-health",
        HEAD + "  uk: {interface: wg-uk, on_down: [ru]}\n",
        [
            "s.yaml:4:7: exits.uk: on_down lists exits to fail over to, but the exit has no "
            "health: an exit without health is never considered down"
        ],
    ),
    (
        "health-on-host-gateway",
        "exits:\n  direct:\n    interface: _DEFAULT\n" + WATCHED,
        [
            "s.yaml:3:5: exits.direct: health watches a tunnel: the host gateway (_DEFAULT) "
            "has no tunnel to probe through"
        ],
    ),
    (
        "probe-targets",
        HEAD + "  uk:\n    interface: wg-uk\n"
        "    health: {probe: ['[2001:db8::1]', '198.51.100.80']}\n",
        [
            "s.yaml:6:22: exits.uk.health.probe.0: '[2001:db8::1]' is not ADDR:PORT (port 1-65535)",
            "s.yaml:6:39: exits.uk.health.probe.1: '198.51.100.80' is not ADDR:PORT (port 1-65535)",
        ],
    ),
    (
        "watches-nothing",
        HEAD + "  uk:\n    interface: wg-uk\n    health: {handshake_max: 0}\n",
        [
            "s.yaml:6:13: exits.uk.health: health watches nothing: give probe targets or a "
            "handshake_max"
        ],
    ),
    (
        "bad-numbers",
        HEAD + "  uk:\n    interface: wg-uk\n"
        "    health: {probe: ['198.51.100.80:80'], fall: 0, interval: 0, rise: 2.5}\n",
        [
            "s.yaml:6:49: exits.uk.health.fall: must be at least 1, not 0",
            "s.yaml:6:62: exits.uk.health.interval: must be more than 0.0, not 0",
            "s.yaml:6:71: exits.uk.health.rise: must be a whole number, not 2.5",
        ],
    ),
    (
        "unknown-health-key",
        HEAD + "  uk:\n    interface: wg-uk\n    health: {probes: ['198.51.100.80:80']}\n",
        ["s.yaml:6:14: exits.uk.health.probes: unknown key 'probes'; did you mean 'probe'?"],
    ),
    (
        "webhook",
        HEAD + "health: {webhook: 'ftp://ops.example.org'}\n",
        ["s.yaml:4:19: health.webhook: 'ftp://ops.example.org' is not an http:// or https:// URL"],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_mistakes_are_reported_where_written(text: str, expected: list[str]) -> None:
    assert problems(text) == expected
