"""``iptserver geoip`` as a user runs it: a real process, its exit status and output."""

from __future__ import annotations

from pathlib import Path

from tests.cli.process import iptserver


def test_geoip_lab_database_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "lab.mmdb"
    assert iptserver("geoip", "lab", str(db)).returncode == 0
    result = iptserver("geoip", "lookup", "--geoip", str(db), "198.51.100.70", "203.0.113.1")
    assert result.stdout.splitlines() == [
        "198.51.100.70 RU 198.51.100.64/26",
        f"203.0.113.1 - (not in {db})",
    ]
    result = iptserver("geoip", "networks", "--geoip", str(db), "gb")
    assert result.stdout.split() == ["198.51.100.0/26", "2001:db8:44::/48"]
    result = iptserver("geoip", "networks", "--geoip", str(db), "UK")
    assert result.returncode == 2
    assert "did you mean GB?" in result.stderr
