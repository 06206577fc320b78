"""The systemd unit as text: what it starts, with which capabilities, how it reloads."""

from __future__ import annotations

from pathlib import Path

from iptserver.cli import main
from iptserver.render.systemd import CAPABILITIES, UnitSettings, render_unit


def lines(unit: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in unit.splitlines() if "=" in line)


def test_the_unit_runs_iptserver_with_network_capabilities_only() -> None:
    settings = UnitSettings(
        ("/opt/venv/bin/python", "-m", "iptserver"),
        Path("/etc/iptserver/my schema.yaml"),
        Path("/var/lib/iptserver"),
        Path("/var/lib/iptserver/country.mmdb"),
    )
    unit = lines(render_unit(settings))
    assert unit["ExecStart"] == (
        "/opt/venv/bin/python -m iptserver run --config '/etc/iptserver/my schema.yaml' "
        "--state-dir /var/lib/iptserver --geoip /var/lib/iptserver/country.mmdb"
    )
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit["Restart"] == "on-failure"
    assert unit["CapabilityBoundingSet"].split() == list(CAPABILITIES)
    assert unit["AmbientCapabilities"].split() == list(CAPABILITIES)
    assert unit["NoNewPrivileges"] == "yes"
    assert unit["StateDirectory"] == "iptserver"
    assert unit["ReadWritePaths"] == "/var/lib/iptserver /run"


def test_a_state_dir_elsewhere_is_not_made_by_systemd() -> None:
    unit = lines(render_unit(UnitSettings(("iptserver",), Path("/s.yaml"), Path("/srv/ipts"))))
    assert "StateDirectory" not in unit
    assert unit["ReadWritePaths"] == "/srv/ipts /run"
    assert "--geoip" not in unit["ExecStart"]


def test_render_systemd_writes_the_unit(tmp_path: Path) -> None:
    out = tmp_path / "iptserver.service"
    assert main(["render", "systemd", "--config", "/etc/x.yaml", "-o", str(out)]) == 0
    unit = lines(out.read_text())
    expected = "-m iptserver run --config /etc/x.yaml --state-dir /var/lib/iptserver"
    assert unit["ExecStart"].endswith(expected)
