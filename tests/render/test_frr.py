"""`iptserver render frr`: per node an frr.conf FRR accepts, stable to the byte."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from iptserver.cli import main
from iptserver.lab.frr import dry_run

GOLDEN = Path(__file__).parent / "frr"
MESH = """
exits:
  uk: {interface: wg_uk}
  direct: {interface: _DEFAULT}
kernel: {export_table: 200}
nodes:
  entry: {entry: true, endpoint: 198.18.0.1, subnets: [10.77.1.0/24, "fd77:1::/64"]}
  uk: {endpoint: 198.18.1.1, router_id: 10.255.0.11}
  office: {endpoint: 198.18.9.1, subnets: [10.88.0.0/24]}
  mt: {mikrotik: true}
  quiet: {ospf: false}
tunnels:
  wg_uk:
    subnet: 10.99.0.0/30
    hosts:
      entry: {}
      uk: {expose: 51821, interface: wg_uk_x}
  wg_office:
    subnet: 10.99.0.4/30
    hosts:
      office: {ospf_cost: 50}
      entry: {expose: true, interface: wg_office, ospf_cost: 50}
  wg_quiet:
    subnet: 10.99.0.8/30
    hosts:
      entry: {}
      quiet: {expose: true}
clients:
  node: entry
  interface: wg-clients
  subnet: 10.77.2.0/24
  peers: {phone: {}}
"""


def render(schema: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["render", "frr", str(schema), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_ospf_node_gets_the_golden_files(
    write_schema: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path = tmp_path / "out"
    code, out, err = render(write_schema(MESH), "--out", str(tmp_path), capsys=capsys)
    assert code == 0, err
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [
        f"{node}/{name}" for node in ("entry", "office", "uk") for name in ("daemons", "frr.conf")
    ]
    assert "mt: a RouterOS peer, skipped" in err and "quiet: ospf: false, skipped" in err
    for node in ("entry", "office", "uk"):
        assert (tmp_path / node / "frr.conf").read_text() == (GOLDEN / f"{node}.conf").read_text()
    assert (tmp_path / "uk" / "daemons").read_text() == (GOLDEN / "daemons").read_text()
    assert oct(os.stat(tmp_path / "uk" / "frr.conf").st_mode & 0o777) == "0o600"
    # Same schema, same bytes: nothing is rewritten.
    code, out, _ = render(write_schema(MESH), "--out", str(tmp_path), capsys=capsys)
    assert code == 0 and out.count("(unchanged)") == 6


def test_frr_accepts_every_rendered_config(
    tmp_path: Path, write_schema: Callable[[str], Path]
) -> None:
    assert main(["render", "frr", str(write_schema(MESH)), "--out", str(tmp_path)]) == 0
    for path in sorted(tmp_path.glob("*/frr.conf")):
        valid, said = dry_run(path)
        assert valid, f"{path}: {said}"


POLICY_MESH = (
    MESH.replace("kernel:", "ingress: [wg_office]\nkernel:")
    .replace("subnets: [10.88.0.0/24]}", "subnets: [10.88.0.0/24], send: policy}")
    .replace("  mt: {mikrotik: true}", "  branch: {subnets: [10.89.0.0/24]}")
    .replace(
        "  wg_quiet:",
        "  wg_branch:\n    subnet: 10.99.0.12/30\n    hosts:\n      entry: {}\n"
        "      branch: {expose: true}\n  wg_quiet:",
    )
)


def test_send_policy_the_entry_announces_the_policy_table_and_only_its_nodes_take_it(
    write_schema: Callable[[str], Path], tmp_path: Path
) -> None:
    assert POLICY_MESH.count("send: policy") == 1 and "wg_branch" in POLICY_MESH
    assert main(["render", "frr", str(write_schema(POLICY_MESH)), "--out", str(tmp_path)]) == 0
    conf = {node: (tmp_path / node / "frr.conf").read_text() for node in ("entry", "office")}
    conf |= {node: (tmp_path / node / "frr.conf").read_text() for node in ("uk", "branch")}
    entry = conf["entry"]
    assert "ip import-table 200\n" in entry and "ip import-table 201\n" in entry
    assert " redistribute table 201 route-map IPTS-POLICY\n" in entry
    assert "route-map IPTS-POLICY permit 10\n set tag 201\n" in entry
    assert "IPTS-REFUSED" not in entry and "IPTS-REFUSED" not in conf["office"]

    def refused(text: str) -> list[str]:
        return [line.split()[-1] for line in text.splitlines() if line.startswith(" match tag")]

    assert refused(conf["uk"]) == ["200", "201"]  # both point back into its tunnel
    assert refused(conf["branch"]) == ["201"]  # learned: the policy nets are not for it
    assert "ip protocol ospf route-map IPTS-REFUSED" in conf["branch"]
    for path in sorted(tmp_path.glob("*/frr.conf")):
        valid, said = dry_run(path)
        assert valid, f"{path}: {said}"


def test_dry_run_rejects_a_broken_config() -> None:
    valid, said = dry_run("router ospf\n ospf router-id not-an-address\n")
    assert not valid and "router-id" in said


def test_one_node_is_printed(
    write_schema: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = render(write_schema(MESH), "--node", "office", capsys=capsys)
    assert code == 0
    assert out.startswith("# office/frr.conf\n")
    assert "# office/daemons\n" in out
    assert "hostname office" in out and "hostname entry" not in out


def test_without_an_export_table_nothing_is_imported_or_refused(
    write_schema: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = render(
        write_schema(MESH.replace("kernel: {export_table: 200}", "")), capsys=capsys
    )
    assert code == 0
    assert "import-table" not in out and "redistribute" not in out and "route-map" not in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("export_table: 200", "export_table: 253"), "kernel.export_table: 253: FRR imports"),
        (("mt: {mikrotik: true}", "mt: {mikrotik: true}"), "no node 'nowhere'"),
    ],
    ids=["table-beyond-frr", "unknown-node"],
)
def test_errors_name_what_to_fix(
    change: tuple[str, str],
    message: str,
    write_schema: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    schema = write_schema(MESH.replace(*change))
    code, out, err = render(
        schema, "--node", "nowhere" if "node" in message else "entry", capsys=capsys
    )
    assert code == 2 and out == ""
    assert err.startswith("iptserver render frr: ") and message in err, err


def test_every_mesh_render_takes_the_same_state_dir(
    write_schema: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One command line renders everything: frr takes --state-dir as wireguard does (the
    README lists it for all), and writes the same files with it."""
    schema = write_schema(MESH)
    state = ["--state-dir", str(tmp_path / "state")]
    code, out, err = render(schema, "--node", "office", *state, capsys=capsys)
    assert code == 0, err
    assert out == render(schema, "--node", "office", capsys=capsys)[1]
    assert main(["render", "wireguard", str(schema), "--node", "office", *state]) == 0
