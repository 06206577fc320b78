"""``iptserver demo`` as a user runs it: the live lab, every prediction checked."""

from __future__ import annotations

from tests.cli.process import iptserver


def test_demo_runs_the_live_lab_and_every_prediction_holds() -> None:
    result = iptserver("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        (line.split()[0], line.split()[1]): line.split()[2:4]
        for line in result.stdout.splitlines()
        if line[:1].isalnum() and len(line.split()) > 4 and line.split()[1] in ("A", "AAAA")
    }
    assert rows[("mail.ru", "A")] == ["198.51.100.70", "ru"]
    assert rows[("www.bbc.co.uk", "A")] == ["198.51.100.10", "uk"]
    assert "MISMATCH" not in result.stdout
    assert "12 connections, 12 left through the exit explain predicts" in result.stdout
