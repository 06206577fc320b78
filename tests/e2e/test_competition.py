"""One destination, rules of two exits: the winner by DESIGN §3, every time, in the
kernel (what the far side saw) and in ``iptserver explain`` alike.

§3: the highest weight wins; then the most specific match (an address from a DNS answer
is a host route, a net counts by its prefix, a country by its GeoIP network); then the
rule written first. In the kernel, each weight is a class of sets tried highest first,
learned host entries before static ones; a learned entry is only added for an address
its domain rule won.
"""

from __future__ import annotations

import pytest

from iptserver.lab.zones import ZONE
from tests.e2e.conftest import BASE_SCHEMA, Iptservers, explained_exit, resolved

REPEATS = 3  # answers and connections per record type: a repeat answer must not flip it

# (id, name, rules, the exit that wins, why)
CONTESTS = [
    (
        "heavier-domain",
        "shop.ru",
        """
  - {exit: ru, domains: [ru]}
  - {exit: uk, domains: ["=shop.ru"], weight: 10}
""",
        "uk",
        "both host routes: the higher weight wins although written second",
    ),
    (
        "first-domain-uk",
        "shop.ru",
        """
  - {exit: uk, domains: ["=shop.ru"]}
  - {exit: ru, domains: [ru]}
""",
        "uk",
        "equal weight, both host routes: the rule written first",
    ),
    (
        "first-domain-ru",
        "shop.ru",
        """
  - {exit: ru, domains: [ru]}
  - {exit: uk, domains: ["=shop.ru"]}
""",
        "ru",
        "the same rules the other way round: the other winner",
    ),
    (
        "host-net-first",
        "shop.ru",
        """
  - {exit: us, nets: [203.0.113.74/32, "2001:db8:ff::74/128"]}
  - {exit: uk, domains: ["=shop.ru"]}
""",
        "us",
        "a /32 (/128) net is as specific as a learned host: the rule written first",
    ),
    (
        "domain-beats-country",
        "ru-hosted.co.uk",
        """
  - {exit: ru, countries: [RU]}
  - {exit: uk, domains: [co.uk]}
""",
        "uk",
        "equal weight: the learned host route beats the country's GeoIP network",
    ),
    (
        "heavier-country",
        "ru-hosted.co.uk",
        """
  - {exit: ru, countries: [RU], weight: 5}
  - {exit: uk, domains: [co.uk]}
""",
        "ru",
        "the country rule's weight beats the more specific learned host",
    ),
]


@pytest.mark.parametrize(
    ("name", "rules", "winner", "why"), [c[1:] for c in CONTESTS], ids=[c[0] for c in CONTESTS]
)
def test_the_same_rule_wins_every_time(
    iptservers: Iptservers, name: str, rules: str, winner: str, why: str
) -> None:
    """Resolve and connect again and again, over IPv4 and IPv6: always the §3 winner,
    and ``explain`` names it too."""
    daemon = iptservers.start(BASE_SCHEMA + "default: direct\nrules:" + rules)
    lab = daemon.lab
    for record in ZONE[name]:
        for attempt in range(REPEATS):
            assert resolved(lab, name, record.type) == [(record.value, record.ttl)]
            way = lab.whoami("client", record.value)
            assert way == winner, f"{name} {record.type} {record.value} #{attempt}: {why}"
        assert explained_exit(daemon, f"{name}={record.value}") == winner, why
