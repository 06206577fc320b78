"""``iptserver check`` and ``explain`` as a user runs them: a process, its status and output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.cli.process import iptserver
from tests.conftest import EXAMPLES


def test_check_accepts_every_example() -> None:
    paths = sorted(str(p) for p in EXAMPLES.rglob("*.yaml"))
    result = iptserver("check", *paths)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok (") == len(paths)


def test_check_prints_every_error_as_file_line_col(write_schema) -> None:  # type: ignore[no-untyped-def]
    bad = write_schema(
        "exits:\n  uk: {interface: wg-uk}\nrules:\n"
        "  - exit: uk\n    nets: [10.0.0.0/33]\n    countries: [UK]\n"
        "  - exit: us\n    domains: ['~(']\n    weight: 1.5\n"
    )
    result = iptserver("check", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ", 2)[0:2] for line in lines] == [
        [f"{bad}:5:12", "rules.0.nets.0"],
        [f"{bad}:6:17", "rules.0.countries.0"],
        [f"{bad}:7:11", "rules.1.exit"],
        [f"{bad}:8:15", "rules.1.domains.0"],
        [f"{bad}:9:13", "rules.1.weight"],
    ]


def test_check_of_a_good_and_a_bad_file_fails_and_reports_both(write_schema) -> None:  # type: ignore[no-untyped-def]
    bad = write_schema("exits: {}\nrules: [{exit: x, nets: [1.2.3.4]}]\n")
    result = iptserver("check", str(EXAMPLES / "minimal.yaml"), str(bad))
    assert result.returncode == 1
    assert "minimal.yaml: ok" in result.stdout
    assert f"{bad}:2:16: rules.0.exit: exit 'x' is not defined (defined: none)" in result.stderr


def test_check_of_unreadable_files_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    result = iptserver("check", str(tmp_path / "missing.yaml"), str(binary), str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{tmp_path / 'missing.yaml'}:1:1: cannot read the file" in result.stderr
    assert f"{binary}:1:1: cannot read the file" in result.stderr
    assert f"{tmp_path}:1:1: cannot read the file" in result.stderr


def test_explain_json_contract(lab_mmdb: Path) -> None:
    result = iptserver(
        "explain",
        str(EXAMPLES / "uk-ru-us.yaml"),
        "mail.ru=198.51.100.200",
        "198.51.100.150",
        "10.77.0.9",
        "--geoip",
        str(lab_mmdb),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert [(a["query"], a["exit"], a["interface"], a["rule"]) for a in answers] == [
        ("mail.ru=198.51.100.200", "ru", "wg-ru", 0),
        ("198.51.100.150", "us", "wg-us", None),
        ("10.77.0.9", None, None, None),
    ]


def test_explain_without_geoip_says_country_rules_are_not_evaluated(tmp_path: Path) -> None:
    env = {**os.environ, "IPTSERVER_GEOIP": str(tmp_path / "none.mmdb")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "iptserver",
            "explain",
            str(EXAMPLES / "uk-ru-us.yaml"),
            "198.51.100.10",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0
    assert "country rules are not evaluated" in result.stderr
    assert json.loads(result.stdout)[0]["exit"] == "us"  # the default: GB is unknown
