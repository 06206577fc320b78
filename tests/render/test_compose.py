"""``iptserver render compose``: the override against a golden copy, same bytes every time,
the user's file left alone, clear errors, and docker-compose's own reading of the merge."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from iptserver.cli import main
from iptserver.render.compose import ComposeSettings, render_override
from iptserver.schema.values import parse_endpoint, parse_network

GOLDEN = Path(__file__).parent / "compose-override.yml"
COMPOSE = "/usr/bin/docker-compose"  # Debian's docker-compose (v1), installed by make
USER = {
    "version": "2.4",
    "services": {"firezone": {"image": "firezone/firezone", "ports": ["51820:51820/udp"]}},
}
SETTINGS = ComposeSettings(
    service="firezone",
    schema=Path("/srv/mrvpn/iptserver.yaml"),
    state_dir=Path("/var/lib/iptserver"),
    frr_dir=Path("/srv/mrvpn/frr"),
    image="iptserver:1",
    geoip=Path("/var/lib/iptserver/country.mmdb"),
    forward=(parse_endpoint("10.0.0.53:53"), parse_endpoint("[2001:db8::53]:53")),
    allow_from=(parse_network("10.77.0.0/16"), parse_network("fd77::/16")),
)
USER_TEXT = """\
version: "2.4"
services:
  firezone:
    image: firezone/firezone
    ports: ["51820:51820/udp"]
  db:
    image: postgres
"""
# Two tunnel ends in firezone (an explicit port and `true`: 51820 + the tunnel's place),
# one in another service, one that only dials out.
SCHEMA = """\
exits:
  uk: {interface: wg_uk}
rules:
  - exit: uk
    domains: [co.uk]
nodes:
  entry: {entry: true, endpoint: 198.18.0.1}
  uk: {endpoint: 198.18.1.1}
  ru: {endpoint: 198.18.2.1}
  us: {endpoint: 198.18.3.1}
tunnels:
  wg_uk:
    subnet: 10.99.0.0/30
    hosts:
      entry: {expose: 51831, compose_service: firezone}
      uk: {expose: 51821}
  wg_ru:
    subnet: 10.99.0.4/30
    hosts:
      entry: {expose: true, compose_service: firezone}
      ru: {}
  wg_us:
    subnet: 10.99.0.8/30
    hosts:
      entry: {expose: 51840, compose_service: db}
      us: {}
  wg_out:
    subnet: 10.99.0.12/30
    hosts:
      entry: {compose_service: firezone}
      us: {expose: 51850}
"""
SIDECARS = ("iptserver", "iptserver-recursor", "iptserver-frr")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "docker-compose.yml").write_text(USER_TEXT)
    (tmp_path / "iptserver.yaml").write_text(SCHEMA)
    return tmp_path


def render(project: Path, *extra: str, output: str = "override.yml") -> int:
    argv = ["render", "compose", "--compose-file", str(project / "docker-compose.yml")]
    argv += ["--service", "firezone", "--config", str(project / "iptserver.yaml")]
    argv += ["--state-dir", str(project / "state"), "--frr-dir", str(project / "frr")]
    return main([*argv, "-o", str(project / output), *extra])


def test_renders_the_golden_file() -> None:
    text = render_override(USER, SETTINGS, "docker-compose.yml", (51821, 51822))
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_same_input_same_bytes_and_the_users_file_untouched(project: Path) -> None:
    user = project / "docker-compose.yml"
    before = (user.read_bytes(), user.stat().st_mtime_ns)
    assert render(project, output="one.yml") == 0
    assert render(project, output="two.yml") == 0
    assert (project / "one.yml").read_bytes() == (project / "two.yml").read_bytes()
    assert (user.read_bytes(), user.stat().st_mtime_ns) == before


def test_publishes_the_ports_of_the_tunnels_in_the_service(project: Path) -> None:
    assert render(project) == 0
    override = yaml.safe_load((project / "override.yml").read_text())
    # wg_ru is the second tunnel: `expose: true` is 51820 + 2
    assert override["services"]["firezone"] == {"ports": ["51822:51822/udp", "51831:51831/udp"]}
    assert "db" not in override["services"]
    assert override["version"] == "2.4"


def test_every_sidecar_joins_the_service(project: Path) -> None:
    assert render(project, "--image", "registry.example/iptserver:2") == 0
    services = yaml.safe_load((project / "override.yml").read_text())["services"]
    for name in SIDECARS:
        service = services[name]
        assert service["network_mode"] == "service:firezone", name
        assert service["image"] == "registry.example/iptserver:2", name
        assert service["healthcheck"]["test"][:3] == ["CMD", "iptserver-sidecar", "health"]
        assert service["restart"] == "unless-stopped"
    daemon = services["iptserver"]
    assert "NET_ADMIN" in daemon["cap_add"]
    assert daemon["devices"] == ["/dev/net/tun:/dev/net/tun"]
    assert f"{project / 'iptserver.yaml'}:/etc/iptserver/schema.yaml:ro" in daemon["volumes"]
    assert f"{project / 'state'}:/var/lib/iptserver" in daemon["volumes"]
    assert daemon["command"][:3] == ["iptserver-sidecar", "iptserver", "--log-level"]
    assert services["iptserver-frr"]["volumes"] == [f"{project / 'frr'}:/etc/frr"]


def test_docker_compose_reads_the_merge(project: Path) -> None:
    """docker-compose's own validation of the user's file with the override."""
    assert render(project) == 0
    merged = subprocess.run(
        [COMPOSE, "-f", "docker-compose.yml", "-f", "override.yml", "config"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert merged.returncode == 0, merged.stderr
    services: dict[str, Any] = yaml.safe_load(merged.stdout)["services"]
    assert sorted(services) == sorted(["firezone", "db", *SIDECARS])
    for name in SIDECARS:
        assert services[name]["network_mode"] == "service:firezone"
    published = sorted(p["published"] for p in services["firezone"]["ports"])
    assert published == [51820, 51822, 51831]  # the user's port is kept


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            {"--service": "wireguard"},
            "docker-compose.yml: services: no service 'wireguard' (the file has: db, firezone)",
            id="missing-service",
        ),
        pytest.param(
            {"--compose-file": "nowhere.yml"},
            "nowhere.yml: cannot read the compose file",
            id="missing-file",
        ),
        pytest.param({"--compose-file": "."}, ": cannot read the compose file", id="a-directory"),
    ],
)
def test_errors_name_the_file(
    project: Path,
    change: dict[str, str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["render", "compose", "--compose-file", str(project / "docker-compose.yml")]
    argv += ["--service", "firezone", "--config", str(project / "iptserver.yaml")]
    for flag, value in change.items():
        argv[argv.index(flag) + 1] = str(project / value) if flag.endswith("file") else value
    assert main([*argv, "-o", str(project / "override.yml")]) == 1
    assert expected in capsys.readouterr().err
    assert not (project / "override.yml").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "services:\n  firezone: {image: x\n",
            "docker-compose.yml:3:1: not valid YAML",
            id="yaml",
        ),
        pytest.param("- a\n- b\n", "a compose file is a mapping", id="a-list"),
        pytest.param("version: '3'\n", "services: no services", id="no-services"),
        pytest.param(
            "services:\n  firezone: {}\n  iptserver: {}\n",
            "services: iptserver already defined",
            id="sidecar-name-taken",
        ),
    ],
)
def test_bad_compose_files(
    project: Path, text: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "docker-compose.yml").write_text(text)
    assert render(project) == 1
    assert expected in capsys.readouterr().err
    assert (project / "docker-compose.yml").read_text() == text


def test_a_bad_schema_is_reported_where_it_is(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "iptserver.yaml").write_text("exits:\n  uk: {interface: wg_uk}\nrules: 7\n")
    assert render(project) == 1
    assert f"{project / 'iptserver.yaml'}:3:" in capsys.readouterr().err


def test_the_override_never_replaces_the_compose_file(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert render(project, output="docker-compose.yml") == 1
    assert "must not replace the compose file" in capsys.readouterr().err
    assert (project / "docker-compose.yml").read_text() == USER_TEXT


@pytest.mark.parametrize(
    ("listen", "upstream"),
    [("0.0.0.0:53", "127.0.0.1:53"), ("[::]:5300", "[::1]:5300"), ("10.77.1.1:53", "10.77.1.1:53")],
    ids=["any-v4", "any-v6", "one-address"],
)
def test_the_daemon_forwards_to_the_recursor(project: Path, listen: str, upstream: str) -> None:
    assert render(project, "--dns-listen", listen) == 0
    services = yaml.safe_load((project / "override.yml").read_text())["services"]
    command = services["iptserver"]["command"]
    assert command[command.index("--upstream") + 1] == upstream
    assert services["iptserver-recursor"]["environment"]["RECURSOR_LISTEN"] == listen
