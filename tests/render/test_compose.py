"""``iptserver render compose``: the override and the standalone stacks against golden
copies, same bytes every time, the user's file left alone, keys only in mounted files,
clear errors (naming the schema field where the schema is at fault), and docker-compose's
own reading of the results."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from iptserver.cli import main
from iptserver.mesh.keys import public_of
from iptserver.mesh.topology import mesh_of
from iptserver.render.compose import ComposeSettings, compose_tunnels, render_override
from iptserver.render.compose_stack import render_stack
from iptserver.render.files import Rendered
from iptserver.schema.load import parse_schema
from iptserver.schema.values import parse_endpoint, parse_network

GOLDEN = Path(__file__).parent / "compose-override.yml"
GOLDEN_STACK = Path(__file__).parent / "compose-stack"
COMPOSE = "/usr/bin/docker-compose"  # Debian's docker-compose (v1), installed by make
USER = {
    "version": "2.4",
    "services": {
        "firezone": {"image": "firezone/firezone", "ports": ["51820:51820/udp"]},
        "db": {"image": "postgres"},
    },
}
SETTINGS = ComposeSettings(
    service="firezone",
    schema=Path("/srv/mrvpn/iptserver.yaml"),
    state_dir=Path("/var/lib/iptserver"),
    frr_dir=Path("/srv/mrvpn/frr"),
    image="iptserver:1",
    wireguard_dir=Path("/srv/mrvpn/wireguard"),
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
# one in another service, one that only dials out; uk and office get stacks of their own.
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
  office: {ospf: false, subnets: [10.88.0.0/24]}
  mt: {mikrotik: true}
tunnels:
  wg_uk:
    subnet: 10.99.0.0/30
    preshared_key: true
    hosts:
      entry: {expose: 51831, compose_service: firezone}
      uk: {expose: 51821, masquerade: true}
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
  wg_office:
    subnet: 10.99.0.16/30
    hosts:
      office: {allowed_nets: [10.99.0.0/24, 198.51.100.0/24]}
      entry: {expose: 51860}
  wg_mt:
    subnet: 10.99.0.20/30
    hosts:
      mt: {}
      uk: {expose: true}
"""
SIDECARS = ("iptserver", "iptserver-recursor", "iptserver-frr")
TUNNELS = ("wg_uk", "wg_ru", "wg_us", "wg_out")  # the entry's ends in a compose service
FRR_FILES = (
    Rendered(PurePosixPath("uk/frr.conf"), "! uk's frr.conf\n"),
    Rendered(PurePosixPath("uk/daemons"), "ospfd=yes\n"),
)


class FixedKeys:
    """A key source with the same keys every time, kept where a state directory keeps them."""

    root = Path("/var/lib/iptserver/keys")

    def private(self, node: str, interface: str, file: str | None = None) -> str:
        return _key(f"{node}/{interface}")

    def public(self, node: str, interface: str, file: str | None = None) -> str:
        return public_of(self.private(node, interface, file))

    def client_private(self, name: str, file: str | None = None) -> str:
        return _key(f"clients/{name}")

    def preshared(self, tunnel: str) -> str:
        return _key(f"tunnels/{tunnel}")


def _key(seed: str) -> str:
    return base64.b64encode(hashlib.sha256(seed.encode()).digest()).decode()


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def keys_in(state: Path) -> list[str]:
    """Every key the render made in a state directory."""
    return [data.decode().strip() for data in tree(state / "keys").values()]


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


def render_stack_cli(project: Path, node: str, out: str = "stacks", *extra: str) -> int:
    argv = ["render", "compose", "--stack", node, "--config", str(project / "iptserver.yaml")]
    argv += ["--state-dir", str(project / "state"), "--out", str(project / out)]
    return main([*argv, *extra])


def mesh() -> Any:
    return mesh_of(parse_schema(SCHEMA, "iptserver.yaml").schema)


def test_renders_the_golden_file() -> None:
    tunnels = compose_tunnels(mesh(), "entry", FixedKeys())
    text = render_override(USER, SETTINGS, "docker-compose.yml", tunnels)
    assert text == GOLDEN.read_text(encoding="utf-8")


@pytest.mark.parametrize("node", ["uk", "office"])
def test_renders_the_golden_stack(node: str) -> None:
    """uk: an exit running OSPF, listening on two tunnels, one of them masquerading and
    with a preshared key; office: no OSPF, dials out only."""
    files = render_stack(mesh(), node, FixedKeys(), "iptserver:1", FRR_FILES)
    written = {str(f.path): f.text for f in files}
    golden = {
        str(path.relative_to(GOLDEN_STACK)): path.read_text(encoding="utf-8")
        for path in sorted((GOLDEN_STACK / node).rglob("*"))
        if path.is_file()
    }
    if node == "uk":  # the FRR files are passed through as given
        assert written.pop("uk/frr/frr.conf") == "! uk's frr.conf\n"
        assert written.pop("uk/frr/daemons") == "ospfd=yes\n"
    assert written == golden


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
    assert override["services"]["db"] == {"ports": ["51840:51840/udp"]}
    assert override["version"] == "2.4"


def test_a_tunnel_container_per_tunnel_end_in_its_service(project: Path) -> None:
    """Each of the entry's ends with compose_service runs in that service's namespace, on
    a config written without keys, with its key files mounted read-only from the state
    directory; no key is anywhere in the override."""
    assert render(project) == 0
    text = (project / "override.yml").read_text()
    services = yaml.safe_load(text)["services"]
    state = project / "state" / "keys"
    for tunnel, host in [("wg_uk", "firezone"), ("wg_ru", "firezone"), ("wg_us", "db")]:
        service = services[f"iptserver-tunnel-{tunnel}"]
        assert service["network_mode"] == f"service:{host}"
        assert service["restart"] == "unless-stopped"
        assert service["command"] == ["iptserver-sidecar", "tunnel", tunnel]
        assert "environment" not in service
        conf = project / "wireguard" / f"{tunnel}.conf"
        assert f"{conf}:/etc/wireguard/{tunnel}.conf:ro" in service["volumes"]
        key = f"{state / 'entry' / tunnel}.key:/etc/wireguard/keys/private.key:ro"
        assert key in service["volumes"]
        assert "PrivateKey" not in conf.read_text()
    psk = f"{state / 'tunnels' / 'wg_uk.psk'}:/etc/wireguard/keys/preshared.psk:ro"
    assert psk in services["iptserver-tunnel-wg_uk"]["volumes"]
    assert "PresharedKey" not in (project / "wireguard" / "wg_uk.conf").read_text()
    # only the entry's ends, and only those placed in a service
    assert sorted(n for n in services if n.startswith("iptserver-tunnel-")) == sorted(
        f"iptserver-tunnel-{t}" for t in TUNNELS
    )
    made = keys_in(project / "state")
    assert made  # the render made the keys it mounts
    for key in made:
        assert key not in text
        for conf in (project / "wireguard").iterdir():
            assert key not in conf.read_text()


@pytest.mark.parametrize(
    ("tunnel", "max_age"),
    [("wg_ru", "180"), ("wg_out", "180"), ("wg_uk", "0")],
    ids=["peer-dials-with-keepalive", "dials-out-with-keepalive", "nobody-keeps-alive"],
)
def test_the_health_check_asks_for_a_fresh_handshake_when_one_is_kept(
    project: Path, tunnel: str, max_age: str
) -> None:
    """A handshake younger than 180 s where a side sends keepalives (the session is
    renewed every 120 s); where both sides listen and none keeps the session alive, it
    may rightly go idle: the interface alone is checked (0)."""
    assert render(project) == 0
    services = yaml.safe_load((project / "override.yml").read_text())["services"]
    test = services[f"iptserver-tunnel-{tunnel}"]["healthcheck"]["test"]
    assert test == ["CMD", "iptserver-sidecar", "health", "tunnel", tunnel, max_age]


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
    tunnels = [f"iptserver-tunnel-{t}" for t in TUNNELS]
    assert sorted(services) == sorted(["firezone", "db", *SIDECARS, *tunnels])
    for name in SIDECARS:
        assert services[name]["network_mode"] == "service:firezone"
    assert services["iptserver-tunnel-wg_us"]["network_mode"] == "service:db"
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
    argv += ["--state-dir", str(project / "state"), "--frr-dir", str(project / "frr")]
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


def test_the_stack_same_bytes_and_docker_compose_reads_it(project: Path) -> None:
    """Twice the same files; docker-compose accepts the stack; no key is in any file."""
    assert render_stack_cli(project, "uk", "one") == 0
    assert render_stack_cli(project, "uk", "two") == 0
    one, two = (tree(project / name) for name in ("one", "two"))
    assert one == two
    assert sorted(one) == [
        "uk/docker-compose.yml",
        "uk/frr/daemons",
        "uk/frr/frr.conf",
        "uk/wireguard/wg_mt.conf",
        "uk/wireguard/wg_uk.conf",
    ]
    for key in keys_in(project / "state"):
        assert all(key.encode() not in data for data in one.values())
    checked = subprocess.run(
        [COMPOSE, "config"], cwd=project / "one" / "uk", capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    services: dict[str, Any] = yaml.safe_load(checked.stdout)["services"]
    assert sorted(services) == [
        "iptserver-frr",
        "iptserver-net",
        "iptserver-tunnel-wg_mt",
        "iptserver-tunnel-wg_uk",
    ]
    for name in ("iptserver-frr", "iptserver-tunnel-wg_mt", "iptserver-tunnel-wg_uk"):
        assert services[name]["network_mode"] == "service:iptserver-net"
    published = sorted(p["published"] for p in services["iptserver-net"]["ports"])
    assert published == [51821, 51826]  # wg_mt is the sixth tunnel: expose true


@pytest.mark.parametrize(
    ("node", "change", "expected"),
    [
        pytest.param(
            "entry", None, "nodes.entry.entry: the entry runs beside its host service", id="entry"
        ),
        pytest.param("mt", None, "nodes.mt.mikrotik: a RouterOS peer runs no containers", id="mt"),
        pytest.param(
            "nowhere", None, "no node 'nowhere' in the schema (nodes: entry", id="unknown"
        ),
        pytest.param(
            "office",
            ("{allowed_nets: [10.99.0.0/24, 198.51.100.0/24]}", "{}"),
            "tunnels.wg_office.hosts.office.allowed_nets: with wg-quick's Table = auto",
            id="table-auto-default-route",
        ),
        pytest.param(
            "office",
            ("{allowed_nets: [10.99.0.0/24, 198.51.100.0/24]}", f"{{public_key: {_key('x')}}}"),
            "tunnels.wg_office.hosts.office.public_key: the private key of office's end of "
            "wg_office is kept elsewhere",
            id="no-private-key",
        ),
    ],
)
def test_stack_errors_name_the_schema_field(
    project: Path,
    node: str,
    change: tuple[str, str] | None,
    expected: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if change is not None:
        (project / "iptserver.yaml").write_text(SCHEMA.replace(*change))
    assert render_stack_cli(project, node) == 1
    assert expected in capsys.readouterr().err
    assert not (project / "stacks").exists()


def test_a_tunnel_container_takes_no_default_route_over(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = SCHEMA.replace(
        "entry: {compose_service: firezone}", "entry: {compose_service: firezone, table: auto}"
    )
    (project / "iptserver.yaml").write_text(changed)
    assert render(project) == 1
    expected = "tunnels.wg_out.hosts.entry.allowed_nets: with wg-quick's Table = auto"
    assert expected in capsys.readouterr().err


def test_a_tunnel_in_a_service_the_file_lacks_names_the_schema_field(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "iptserver.yaml").write_text(
        SCHEMA.replace("compose_service: db", "compose_service: pg")
    )
    assert render(project) == 1
    err = capsys.readouterr().err
    assert (
        f"{project / 'iptserver.yaml'}: tunnels.wg_us.hosts.entry.compose_service: "
        "no service 'pg' in"
    ) in err
    assert "(the file has: db, firezone)" in err
    assert not (project / "override.yml").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--stack", "uk"],
        ["--stack", "uk", "--out", "x", "--compose-file", "docker-compose.yml"],
        ["--compose-file", "docker-compose.yml"],
    ],
    ids=["stack-without-out", "stack-and-override", "override-without-service"],
)
def test_one_mode_at_a_time(
    project: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "compose", "--config", str(project / "iptserver.yaml"), *argv]) == 2
    assert "--stack " in capsys.readouterr().err


def test_a_dual_stack_tunnel_gets_ipv6_forwarding(project: Path) -> None:
    """The office's tunnel carries IPv4 only: no IPv6 forwarding; with ``subnet6`` on it,
    the namespace forwards IPv6 too and the tunnel end has both addresses."""
    assert render_stack_cli(project, "office", "v4") == 0
    compose = yaml.safe_load((project / "v4" / "office" / "docker-compose.yml").read_text())
    assert compose["services"]["iptserver-net"]["sysctls"] == {"net.ipv4.ip_forward": 1}
    dual = SCHEMA.replace(
        "    subnet: 10.99.0.16/30\n", "    subnet: 10.99.0.16/30\n    subnet6: fd99::/64\n"
    )
    (project / "iptserver.yaml").write_text(dual)
    assert render_stack_cli(project, "office", "v6") == 0
    compose = yaml.safe_load((project / "v6" / "office" / "docker-compose.yml").read_text())
    assert compose["services"]["iptserver-net"]["sysctls"] == {
        "net.ipv4.ip_forward": 1,
        "net.ipv6.conf.all.forwarding": 1,
    }
    conf = (project / "v6" / "office" / "wireguard" / "wg_office.conf").read_text()
    assert "Address = 10.99.0.17/30, fd99::1/64" in conf


def test_every_node_with_compose_true_gets_its_stack(project: Path) -> None:
    marked = SCHEMA.replace(
        "  uk: {endpoint: 198.18.1.1}", "  uk: {endpoint: 198.18.1.1, compose: true}"
    )
    marked = marked.replace("  office: {ospf: false", "  office: {compose: true, ospf: false")
    (project / "iptserver.yaml").write_text(marked)
    assert render_stack_cli(project, "") == 0  # --stack without a node
    written = sorted(tree(project / "stacks"))
    assert [path for path in written if path.endswith("docker-compose.yml")] == [
        "office/docker-compose.yml",
        "uk/docker-compose.yml",
    ]


def test_no_node_with_compose_true(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert render_stack_cli(project, "") == 1
    assert "nodes: no node has compose: true (or: --stack NODE)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ("entry", "nodes.entry.compose: the entry runs beside its host service"),
        ("mt", "nodes.mt.compose: a RouterOS peer runs no containers"),
    ],
    ids=["entry", "mikrotik"],
)
def test_compose_true_where_no_stack_can_run_is_a_schema_error(
    project: Path, node: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    marked = SCHEMA.replace(f"  {node}: {{", f"  {node}: {{compose: true, ", 1)
    (project / "iptserver.yaml").write_text(marked)
    assert main(["check", str(project / "iptserver.yaml")]) != 0
    err = capsys.readouterr().err
    lines = marked.splitlines()
    line = 1 + next(n for n, text in enumerate(lines) if text.startswith(f"  {node}: "))
    assert f"{project / 'iptserver.yaml'}:{line}:" in err
    assert expected in err
