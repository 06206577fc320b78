"""The export table's bookkeeping: which host routes to install, and when they expire."""

from __future__ import annotations

import ipaddress

from iptserver.dataplane.export import ExportTable, HostRoute


def route(ip: str, interface: str = "wg-uk") -> HostRoute:
    return HostRoute(ipaddress.ip_network(ip), interface)


def test_new_routes_are_installed_once_and_repeat_answers_only_extend_them() -> None:
    table = ExportTable()
    assert table.refresh([(route("203.0.113.7"), 10.0), (route("2001:db8::7"), 20.0)]) == [
        route("203.0.113.7"),
        route("2001:db8::7"),
    ]
    assert table.refresh([(route("203.0.113.7"), 30.0)]) == []
    assert table.deadline(ipaddress.ip_network("203.0.113.7")) == 30.0
    # A shorter hold never cuts an earlier, longer one.
    assert table.refresh([(route("203.0.113.7"), 15.0)]) == []
    assert table.deadline(ipaddress.ip_network("203.0.113.7")) == 30.0


def test_an_ip_whose_exit_changes_is_installed_again_with_the_new_deadline() -> None:
    table = ExportTable()
    table.refresh([(route("203.0.113.7"), 30.0)])
    assert table.refresh([(route("203.0.113.7", "wg-ru"), 12.0)]) == [route("203.0.113.7", "wg-ru")]
    assert table.routes() == [route("203.0.113.7", "wg-ru")]
    assert table.deadline(ipaddress.ip_network("203.0.113.7")) == 12.0


def test_expiry_hands_back_what_is_over_and_keeps_the_rest() -> None:
    table = ExportTable()
    table.refresh([(route("203.0.113.7"), 10.0), (route("203.0.113.8"), 20.0)])
    assert table.next_deadline() == 10.0
    assert table.expired(9.9) == []
    assert table.expired(10.0) == [route("203.0.113.7")]
    assert table.next_deadline() == 20.0
    assert len(table) == 1
    assert table.clear() == [route("203.0.113.8")]
    assert table.next_deadline() is None and table.expired(100.0) == []
