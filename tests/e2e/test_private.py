"""Private and mesh destinations are never diverted (DESIGN §3), even when a domain rule
matches their name: the client gets its answer whole, and no route is learned for them.

The learned routes are read from the entry's ipsets here (the outside cannot tell a
route that was never learned from one that takes the default way): the complement to the
policy core's unit tests. mixed.ru's public address shows the reading sees what is
learned.
"""

from __future__ import annotations

import pytest

from iptserver.lab import Lab
from tests.e2e.conftest import Running, explained, resolved
from tests.e2e.entry_kernel import SET_PREFIX

# (name, record type, its private addresses, its public ones); a ru rule matches them all
ANSWERS = [
    ("printer.ru", "A", {"10.77.1.50"}, set()),
    ("printer.ru", "AAAA", {"fd77:1::50"}, set()),
    ("router.ru", "A", {"192.168.1.1"}, set()),
    ("cgnat.ru", "A", {"100.64.0.1"}, set()),
    ("linklocal.ru", "A", {"169.254.1.1"}, set()),
    ("linklocal.ru", "AAAA", {"fe80::1"}, set()),
    ("mixed.ru", "A", {"10.77.1.51"}, {"203.0.113.79"}),
]


def learned(lab: Lab) -> set[str]:
    """Every address in the entry's DNS-learned sets (``ipts-d<weight>-<family>``)."""
    saved = lab.run("entry", ["ipset", "save"]).stdout
    return {
        words[2].split("/")[0]
        for words in (line.split() for line in saved.splitlines())
        if words[0] == "add" and words[1].startswith(f"{SET_PREFIX}d")
    }


@pytest.mark.parametrize(
    ("name", "rtype", "private", "public"), ANSWERS, ids=[f"{a[0]}-{a[1]}" for a in ANSWERS]
)
def test_private_answers_are_released_but_never_diverted(
    running: Running, name: str, rtype: str, private: set[str], public: set[str]
) -> None:
    """The answer arrives whole; only its public addresses are learned (and leave via
    ru); explain calls the private ones private."""
    lab = running.lab
    assert {address for address, _ in resolved(lab, name, rtype)} == private | public
    routes = learned(lab)
    assert not private & routes, f"learned a route for a private address of {name}"
    assert public <= routes, f"{name}: its public address was not learned"
    for address in private:
        assert explained(running, f"{name}={address}")["reason"] == "private"
    for address in public:
        assert lab.whoami("client", address) == "ru"
