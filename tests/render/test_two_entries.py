"""A schema with two entries renders every node's files, stable to the byte: the exits and
the office get a tunnel to each entry, each entry announces its own learned routes and
refuses the other's, and each client gets a config per entry."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
import yaml

from iptserver.cli import main
from iptserver.lab.frr import dry_run
from tests.conftest import EXAMPLES

SCHEMA = EXAMPLES / "two-entries.yaml"
NODES = ("entry", "entry2", "uk", "ru", "office")


def render(what: str, out: Path, state: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["render", what, str(SCHEMA), "--out", str(out), "--state-dir", str(state)]) == 0
    return capsys.readouterr().out


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_every_node_and_client_gets_its_files_and_a_second_render_changes_no_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    for what in ("wireguard", "frr", "clients"):
        render(what, tmp_path / what, state, capsys)
    first = {what: files(tmp_path / what) for what in ("wireguard", "frr", "clients")}
    assert sorted(first["frr"]) == [
        f"{n}/{f}" for n in sorted(NODES) for f in ("daemons", "frr.conf")
    ]
    assert sorted(first["wireguard"]) == [
        "entry/wg-clients.conf",
        "entry/wg_office.conf",
        "entry/wg_ru.conf",
        "entry/wg_uk.conf",
        "entry2/wg-clients.conf",
        "entry2/wg_office.conf",
        "entry2/wg_ru.conf",
        "entry2/wg_uk.conf",
        "office/wg_office.conf",
        "office/wg_office2.conf",
        "ru/wg_ru.conf",
        "ru/wg_ru2.conf",
        "uk/wg_uk.conf",
        "uk/wg_uk2.conf",
    ]
    assert sorted(first["clients"]) == [
        f"{entry}/{client}.{kind}"
        for entry in ("entry", "entry2")
        for client in ("alice-phone", "bob-laptop")
        for kind in ("conf", "png")
    ]
    for what in first:
        out = render(what, tmp_path / what, state, capsys)
        assert out.count("(unchanged)") == len(first[what]), out
        assert files(tmp_path / what) == first[what]


def test_a_client_switches_entries_by_switching_configs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    render("clients", tmp_path, tmp_path / "state", capsys)
    configs = []
    for entry in ("entry", "entry2"):
        parser = configparser.ConfigParser()
        parser.read_string((tmp_path / entry / "alice-phone.conf").read_text())
        configs.append(parser)
    one, two = configs
    # The same client: key, address, DNS (each entry has 10.77.2.1 on its wg-clients).
    assert dict(one["Interface"]) == dict(two["Interface"])
    assert one["Interface"]["dns"] == "10.77.2.1"
    assert (one["Peer"]["endpoint"], two["Peer"]["endpoint"]) == (
        "198.18.0.1:51820",
        "198.18.8.1:51820",
    )
    assert one["Peer"]["publickey"] != two["Peer"]["publickey"]


def test_each_entry_announces_its_own_learned_routes_and_refuses_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    render("frr", tmp_path, tmp_path / "state", capsys)
    for entry in ("entry", "entry2"):
        text = (tmp_path / entry / "frr.conf").read_text()
        assert "ip import-table 200\n" in text
        assert " redistribute table 200 route-map IPTS-LEARNED\n" in text
        assert "! Tag 200: another entry's routes" in text
        assert " network 10.77.2.0/24 area 0\n" in text  # the clients' subnet, on each
    for exit_name in ("uk", "ru"):
        text = (tmp_path / exit_name / "frr.conf").read_text()
        assert "! Tag 200: routes out of this exit's tunnel" in text
        assert text.count("interface wg_") == 2  # a tunnel to each entry
    office = (tmp_path / "office" / "frr.conf").read_text()
    assert "Tag 200" not in office
    assert "interface wg_office2\n description tunnel wg_office2 to entry2\n" in office
    assert " ip ospf cost 20\n" in office
    for path in sorted(tmp_path.glob("*/frr.conf")):
        valid, said = dry_run(path)
        assert valid, f"{path}: {said}"


def test_a_compose_override_names_its_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "docker-compose.yml").write_text("services:\n  firezone:\n    image: fz\n")
    argv = ["render", "compose", "--compose-file", str(tmp_path / "docker-compose.yml")]
    argv += ["--service", "firezone", "--config", str(SCHEMA), "-o", str(tmp_path / "o.yml")]
    argv += ["--state-dir", str(tmp_path / "state"), "--frr-dir", str(tmp_path / "frr")]
    assert main(argv) == 1
    assert "several entries (entry, entry2): say which one" in capsys.readouterr().err
    assert main([*argv, "--node", "entry2"]) == 0
    override = yaml.safe_load((tmp_path / "o.yml").read_text())
    command = override["services"]["iptserver"]["command"]
    assert command[command.index("--node") + 1] == "entry2"
