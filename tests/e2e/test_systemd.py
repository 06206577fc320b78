"""The systemd unit's promise, kept in the lab: ``iptserver run`` with the unit's
capabilities only (root's uid, every other capability dropped from the bounding set, no
new privileges) programs the kernel, routes a ruled name through its exit, reloads on
SIGHUP (``systemctl reload``) and stops cleanly."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from iptserver.lab import LabError
from iptserver.lab.zones import ZONE
from iptserver.render.systemd import UnitSettings, render_unit
from tests.e2e.conftest import BASE_SCHEMA, Iptservers, api_get, resolved
from tests.e2e.entry_kernel import entry_state, ours

SCHEMA = BASE_SCHEMA + "rules:\n  - {exit: ru, domains: [mail.ru]}\napi: {listen: 127.0.0.1:8053}\n"
# linux/capability.h
CAPABILITY_BITS = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}


def unit_capabilities() -> list[str]:
    """The capabilities the rendered unit leaves the daemon."""
    unit = render_unit(UnitSettings((sys.executable,), Path("/s.yaml"), Path("/var/lib/x")))
    found = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.MULTILINE)
    assert found is not None, unit
    return found.group(1).split()


def setpriv(capabilities: list[str]) -> list[str]:
    """Run a command as the unit runs the daemon: root's uid, these capabilities only."""
    keep = ",".join("+" + name.removeprefix("CAP_").lower() for name in capabilities)
    sets = ("--bounding-set", "--inh-caps", "--ambient-caps")
    return [
        "setpriv",
        *(arg for flag in sets for arg in (flag, f"-all,{keep}")),
        "--no-new-privs",
        "--",
    ]


def test_the_unit_s_capabilities_are_enough_to_route(iptservers: Iptservers) -> None:
    capabilities = unit_capabilities()
    daemon = iptservers.start(SCHEMA, wrapper=setpriv(capabilities))
    lab = daemon.lab
    status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
    found = re.search(r"^CapEff:\s+(\w+)$", status, re.MULTILINE)
    assert found is not None, status
    effective = int(found.group(1), 16)
    assert effective == sum(1 << CAPABILITY_BITS[name] for name in capabilities), status
    ((address, _),) = resolved(lab, "mail.ru")
    assert address == ZONE["mail.ru"][0].value
    assert lab.whoami("client", address) == "ru"
    assert daemon.reload(), daemon.log
    assert lab.whoami("client", address) == "ru"
    # What runs beside it with the same capabilities: the child that lists the learned
    # sets for /v1/routes, and iptables-save for the kernel's DNS drops.
    status, routes = api_get(lab, 8053, "/v1/routes?kind=learned")
    assert status == 200 and [r["net"] for r in routes] == [f"{address}/32"], routes
    _, metrics = api_get(lab, 8053, "/metrics")
    assert "iptserver_dns_kernel_dropped_total 0.0" in metrics


def test_a_start_iptables_refuses_leaves_nothing_behind(iptservers: Iptservers) -> None:
    """Without CAP_NET_RAW iptables cannot start: the daemon says so and exits, and the
    sets it had already made are gone with it (the fixture checks the whole entry)."""
    with pytest.raises(LabError, match="iptables"):
        iptservers.start(SCHEMA, wrapper=setpriv(["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"]))
    assert ours(entry_state(iptservers.lab)) == []
