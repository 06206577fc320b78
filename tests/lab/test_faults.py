"""Faults injected into the session's lab, each undone: the far side proves the effect."""

from __future__ import annotations

import pytest

from iptserver.lab import Lab, LabError

ADDRESS = "198.51.100.10"


def test_a_tunnel_down_loses_its_routes_and_up_brings_the_interface_back(lab: Lab) -> None:
    iface = lab.wg_interface("ru")
    lab.tunnel_down("ru")
    try:
        assert "state DOWN" in lab.run("entry", ["ip", "link", "show", "dev", iface]).stdout
        assert "inet6 fd09:2::1" not in lab.run("entry", ["ip", "addr", "show", iface]).stdout
    finally:
        lab.tunnel_up("ru")
    lab.run("entry", ["ip", "route", "add", ADDRESS, "dev", iface])
    try:
        assert lab.whoami("entry", ADDRESS) == "ru"
    finally:
        lab.run("entry", ["ip", "route", "del", ADDRESS, "dev", iface])


def test_a_killed_exit_carries_nothing_until_revived(lab: Lab) -> None:
    iface = lab.wg_interface("us")
    lab.run("entry", ["ip", "route", "add", ADDRESS, "dev", iface])
    try:
        lab.kill_exit("us")
        try:
            with pytest.raises(LabError):
                lab.whoami("entry", ADDRESS, timeout=0.5)
        finally:
            lab.revive_exit("us")
        assert lab.whoami("entry", ADDRESS) == "us"
    finally:
        lab.run("entry", ["ip", "route", "del", ADDRESS, "dev", iface])


def test_a_dropped_tunnel_is_gone_and_made_again_with_a_handshake(lab: Lab) -> None:
    iface = lab.wg_interface("uk")
    lab.drop_tunnel("uk")
    assert not lab.has_link("entry", iface)
    with pytest.raises(LabError, match="not running"):
        lab.drop_tunnel("uk")
    lab.make_tunnel("uk")
    assert lab.has_link("entry", iface) and lab.handshakes()["uk"]
    with pytest.raises(LabError, match="there already"):
        lab.make_tunnel("uk")


def test_faults_name_only_exits(lab: Lab) -> None:
    with pytest.raises(LabError, match="unknown exit"):
        lab.kill_exit("entry")
