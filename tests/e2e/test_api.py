"""The HTTP API of a daemon running in the lab's entry: what /v1/routes says is routed is
what the kernel holds after the client resolved names through the proxy."""

from __future__ import annotations

import re
from typing import Any

from iptserver.lab import Lab
from tests.e2e.conftest import LAB_EXITS, LAB_SETTINGS, Iptservers, api_get, resolved

API_PORT = 18091
HOLD = 30
SCHEMA = (
    LAB_EXITS
    + "default: direct\n"
    + "rules:\n"
    + f"  - {{exit: ru, domains: [ru], hold: {HOLD}}}\n"
    + "  - {exit: uk, countries: [GB]}\n"
    + "  - {exit: us, nets: [203.0.113.64/28], weight: 5}\n"
    + LAB_SETTINGS
)


def get(lab: Lab, path: str) -> tuple[int, Any]:
    return api_get(lab, API_PORT, path)


def set_entries(lab: Lab) -> dict[tuple[str, str], float]:
    """``iptserver_set_entries`` of /metrics: (kind, family) -> entries, added up."""
    status, text = get(lab, "/metrics")
    assert status == 200
    found: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if match := re.fullmatch(r'iptserver_set_entries\{kind="(.+)",set="(.+)"\} (\S+)', line):
            key = (match[1], match[2].rsplit("-", 1)[1])
            found[key] = found.get(key, 0) + float(match[3])
    return found


def test_routes_show_what_the_kernel_learned_and_what_the_rules_route(
    lab: Lab, iptservers: Iptservers
) -> None:
    iptservers.start(SCHEMA, "--api", f"127.0.0.1:{API_PORT}")
    assert get(lab, "/v1/routes?kind=learned") == (200, [])
    before = set_entries(lab)
    assert before[("learned", "4")] == before[("learned", "6")] == 0
    assert before[("static", "4")] > 1  # 203.0.113.64/28 and the lab's GB networks

    assert resolved(lab, "mail.ru")[0][0] == "198.51.100.70"
    assert resolved(lab, "mail.ru", "AAAA")[0][0] == "2001:db8:7::70"
    status, learned = get(lab, "/v1/routes?kind=learned")
    assert status == 200
    assert [r["net"] for r in learned] == ["198.51.100.70/32", "2001:db8:7::70/128"]
    for route in learned:
        assert route["exit"] == "ru" and route["rule"] == 0 and route["names"] == ["mail.ru"]
        assert route["weight"] == 0
        # the kernel's own countdown: the hold plus the 2 s margin, minus the time since
        assert 0 < route["expires_in"] <= HOLD + 2

    after = set_entries(lab)
    assert after[("learned", "4")] == after[("learned", "6")] == 1
    assert after[("static", "4")] == before[("static", "4")]

    # Every route that covers an address: a GeoIP country and the learned entry.
    assert get(lab, "/v1/routes?ip=198.51.100.10") == (
        200,
        [{"kind": "country", "country": "GB", "exit": "uk", "weight": 0, "rule": 1}],
    )
    status, covering = get(lab, "/v1/routes?ip=198.51.100.70")
    assert [(r["kind"], r["exit"]) for r in covering] == [("learned", "ru")]
    assert get(lab, "/v1/routes?exit=us") == (
        200,
        [{"kind": "net", "net": "203.0.113.64/28", "exit": "us", "weight": 5, "rule": 2}],
    )
    status, body = get(lab, "/v1/routes?kind=everything")
    assert status == 400 and "kind must be one of learned, net, country" in body["error"]

    # The recent decisions moved to /v1/decisions.
    status, decisions = get(lab, "/v1/decisions?exit=ru")
    assert status == 200
    assert {(tuple(d["names"]), d["ip"]) for d in decisions} == {
        (("mail.ru",), "198.51.100.70"),
        (("mail.ru",), "2001:db8:7::70"),
    }
