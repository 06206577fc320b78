"""``main``'s one exit-status policy: 1 when a command fails, 2 when it is asked the impossible.

Each row runs a real command in-process and checks the status and the one line it prints.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from iptserver.cli import log_level, main, parser
from iptserver.errors import IptserverError
from iptserver.lab import LabError
from iptserver.render.wireguard import RenderError
from tests.conftest import EXAMPLES

MESH = EXAMPLES / "mesh.yaml"
UK_RU_US = EXAMPLES / "uk-ru-us.yaml"


@pytest.mark.parametrize(
    ("argv", "status", "starts"),
    [
        pytest.param(
            ["explain", str(UK_RU_US), "x.com=nowhere"],
            2,
            "iptserver explain: 'x.com=nowhere' is not NAME=IP",
            id="bad-query",
        ),
        pytest.param(
            ["geoip", "networks", "--geoip", "{tmp}/none.mmdb", "UK"],
            2,
            "iptserver geoip networks: 'UK' is not an ISO 3166-1",
            id="bad-country",
        ),
        pytest.param(
            ["render", "wireguard", str(MESH), "--state-dir", "{tmp}", "--node", "nowhere"],
            2,
            "iptserver render wireguard: ",
            id="unknown-node",
        ),
        pytest.param(
            ["explain", str(UK_RU_US), "x.com", "--geoip", "{tmp}/none.mmdb"],
            1,
            "iptserver explain: GeoIP database {tmp}/none.mmdb does not exist",
            id="missing-geoip",
        ),
        pytest.param(
            ["geoip", "lookup", "--geoip", "{tmp}/none.mmdb", "192.0.2.1"],
            1,
            "iptserver geoip lookup: GeoIP database {tmp}/none.mmdb does not exist",
            id="missing-geoip-lookup",
        ),
        pytest.param(
            ["convert", "{tmp}/none.yaml"],
            1,
            "{tmp}/none.yaml:1:1: cannot read the file",
            id="schema-error-names-its-file",
        ),
        pytest.param(
            ["render", "compose", "--compose-file", "{tmp}/none.yml", "--service", "s"],
            1,
            "iptserver render compose: {tmp}/none.yml: cannot read the compose file",
            id="compose-error",
        ),
    ],
)
def test_exit_status_and_one_line(
    argv: list[str],
    status: int,
    starts: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main([arg.format(tmp=tmp_path) for arg in argv])
    err = capsys.readouterr().err
    assert code == status, err
    assert err.startswith(starts.format(tmp=tmp_path)), err
    assert "Traceback" not in err


def test_every_error_of_a_command_is_an_iptserver_error() -> None:
    assert issubclass(RenderError, IptserverError)
    assert issubclass(LabError, IptserverError)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--config", "s.yaml"],
        ["check", "s.yaml"],
        ["convert", "s.yaml"],
        ["json-schema"],
        ["explain", "s.yaml", "x.com"],
        ["render", "recursor"],
        ["render", "frr", "s.yaml"],
        ["render", "wireguard", "s.yaml"],
        ["render", "clients", "s.yaml"],
        ["render", "routeros", "s.yaml", "--node", "mt"],
        ["render", "compose", "--compose-file", "c.yml", "--service", "s"],
        ["geoip", "update"],
        ["geoip", "lookup", "192.0.2.1"],
        ["geoip", "networks", "GB"],
        ["geoip", "lab", "x.mmdb"],
        ["demo"],
    ],
    ids=lambda argv: "-".join(a for a in argv if "." not in a and not a.startswith("-"))[:30],
)
def test_every_command_parses_and_knows_its_name(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    assert callable(args.handler)
    command = argv[:2] if argv[0] in ("render", "geoip") else argv[:1]
    assert args.prog == "iptserver " + " ".join(command)


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["run", "--config", "s.yaml"], logging.INFO),  # starts, reloads, stops
        (["check", "s.yaml"], logging.WARNING),  # only what goes wrong
        (["--log-level", "debug", "run", "--config", "s.yaml"], logging.DEBUG),
        (["--log-level", "error", "run", "--config", "s.yaml"], logging.ERROR),
        (["--log-level", "info", "check", "s.yaml"], logging.INFO),
    ],
    ids=["run", "check", "run-debug", "run-error", "check-info"],
)
def test_run_logs_at_info_unless_told(argv: list[str], level: int) -> None:
    assert log_level(parser().parse_args(argv)) == level
