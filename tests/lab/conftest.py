"""Lab tests share the session's lab (tests/conftest.py).

Integration tests run as root on the real kernel and never skip. Tests that change the
lab (routes in entry) undo it through ``entry_routes`` so later tests see it as built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from iptserver.lab import Lab


@pytest.fixture
def entry_routes(lab: Lab) -> Iterator[Callable[[str, str], None]]:
    """``add(destination, exit)``: route a destination from the entry into a tunnel."""
    added: list[list[str]] = []

    def add(destination: str, exit_name: str) -> None:
        route = ["ip", "route", "add", destination, "dev", lab.wg_interface(exit_name)]
        lab.run("entry", route)
        added.append(["ip", "route", "del", *route[3:]])

    yield add
    for undo in reversed(added):
        lab.run("entry", undo)
