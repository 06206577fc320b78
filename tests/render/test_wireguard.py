"""`iptserver render wireguard`: wg-quick configs that are stable, root-only, agree end to
end, and work when real wg-quick and wireguard-go load them."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from iptserver.cli import main
from iptserver.lab.netns import socket_in
from iptserver.mesh.keys import KeyStore, public_of
from tests.render.wgnet import Namespaces

MESH = """
exits:
  uk: {interface: wg_uk}
nodes:
  entry: {entry: true, endpoint: 198.18.0.1, subnets: [10.77.1.0/24]}
  uk: {endpoint: 198.18.1.1}
  office: {endpoint: 198.18.9.1, subnets: [10.88.0.0/24]}
  mt: {mikrotik: true}
tunnels:
  wg_uk:
    subnet: 10.99.0.0/30
    preshared_key: true
    hosts:
      entry: {expose: 51821}
      uk: {expose: 51821, masquerade: true, interface: wg_uk_x}
  wg_office:
    subnet: 10.99.0.4/30
    hosts:
      office: {keepalive: 10, allowed_nets: [10.77.0.0/16, 10.99.0.0/24]}
      entry: {expose: true, table: "1234"}
  wg_mt:
    subnet: 10.99.0.8/30
    hosts:
      entry: {expose: true}
      mt: {}
clients:
  node: entry
  subnet: 10.77.2.0/24
  peers: {phone: {}, laptop: {address: 10.77.2.10}}
"""


Conf = list[tuple[str, dict[str, list[str]]]]


def parse(text: str) -> Conf:
    """A wg-quick file as [(section, {key: [values]})] (keys may repeat)."""
    sections: Conf = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            sections.append((line.strip("[]"), {}))
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        sections[-1][1].setdefault(key, []).append(value)
    return sections


def one(conf: Conf, section: int, key: str) -> str:
    (value,) = conf[section][1][key]
    return value


def render(*args: str) -> int:
    return main(["render", "wireguard", *args])


@pytest.fixture
def schema(write_schema: Callable[[str], Path]) -> Path:
    return write_schema(MESH)


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


EXPECTED = {
    "entry/wg_uk.conf",
    "entry/wg_office.conf",
    "entry/wg_mt.conf",
    "entry/wg-clients.conf",
    "uk/wg_uk_x.conf",
    "office/wg_office.conf",
}


def test_a_second_render_gives_the_same_bytes_and_leaves_the_files_alone(
    schema: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, out, other = tmp_path / "state", tmp_path / "out", tmp_path / "other"
    assert render(str(schema), "--state-dir", str(state), "--out", str(out)) == 0
    first = tree(out)
    assert set(first) == EXPECTED
    before = {name: os.stat(out / name) for name in first}
    capsys.readouterr()

    assert render(str(schema), "--state-dir", str(state), "--out", str(out)) == 0
    assert tree(out) == first
    for name, was in before.items():
        now = os.stat(out / name)
        assert (now.st_ino, now.st_mtime_ns) == (was.st_ino, was.st_mtime_ns), name
    assert capsys.readouterr().out.count("(unchanged)") == len(EXPECTED)

    assert render(str(schema), "--state-dir", str(state), "--out", str(other)) == 0
    assert tree(other) == first


def test_keys_persist_and_every_file_is_root_only(
    schema: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    assert render(str(schema), "--state-dir", str(state), "--out", str(out)) == 0
    keys = {p: p.read_text() for p in (state / "keys").rglob("*") if p.is_file()}
    # entry: 3 tunnels + clients; uk, office, mt: 1 each; 2 clients; 1 preshared key
    assert len(keys) == 10
    for path in [*keys, *(out / name for name in EXPECTED)]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for directory in [
        *(p for p in (state / "keys").rglob("*") if p.is_dir()),
        state / "keys",
        out,
        *(out / node for node in ("entry", "uk", "office")),
    ]:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory

    entry_key = one(parse((out / "entry/wg_uk.conf").read_text()), 0, "PrivateKey")
    assert entry_key == (state / "keys/entry/wg_uk.key").read_text().strip()
    (out / "entry/wg_uk.conf").unlink()
    assert render(str(schema), "--state-dir", str(state), "--out", str(out)) == 0
    assert {p: p.read_text() for p in (state / "keys").rglob("*") if p.is_file()} == keys
    assert one(parse((out / "entry/wg_uk.conf").read_text()), 0, "PrivateKey") == entry_key


@pytest.mark.parametrize(
    ("a", "b", "addresses", "endpoint_a", "endpoint_b"),
    [
        ("entry/wg_uk", "uk/wg_uk_x", ("10.99.0.1/30", "10.99.0.2/30"),
         "198.18.1.1:51821", "198.18.0.1:51821"),
        ("office/wg_office", "entry/wg_office", ("10.99.0.5/30", "10.99.0.6/30"),
         "198.18.0.1:51822", None),
    ],
    ids=["both-listen", "office-dials"],
)  # fmt: skip
def test_the_two_ends_of_a_tunnel_agree(
    schema: Path,
    tmp_path: Path,
    a: str,
    b: str,
    addresses: tuple[str, str],
    endpoint_a: str | None,
    endpoint_b: str | None,
) -> None:
    out = tmp_path / "out"
    assert render(str(schema), "--state-dir", str(tmp_path / "state"), "--out", str(out)) == 0
    conf_a = parse((out / f"{a}.conf").read_text())
    conf_b = parse((out / f"{b}.conf").read_text())
    assert [s for s, _ in conf_a] == [s for s, _ in conf_b] == ["Interface", "Peer"]
    assert one(conf_a, 1, "PublicKey") == public_of(one(conf_b, 0, "PrivateKey"))
    assert one(conf_b, 1, "PublicKey") == public_of(one(conf_a, 0, "PrivateKey"))
    assert (one(conf_a, 0, "Address"), one(conf_b, 0, "Address")) == addresses
    assert conf_a[1][1].get("Endpoint") == ([endpoint_a] if endpoint_a else None)
    assert conf_b[1][1].get("Endpoint") == ([endpoint_b] if endpoint_b else None)
    for conf, peer_endpoint in ((conf_a, endpoint_b), (conf_b, endpoint_a)):
        if peer_endpoint is not None:  # the side the other one dials listens on that port
            assert one(conf, 0, "ListenPort") == peer_endpoint.rsplit(":", 1)[1]
    assert conf_a[1][1].get("PresharedKey") == conf_b[1][1].get("PresharedKey")


def test_the_schema_settings_reach_the_config(schema: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert render(str(schema), "--state-dir", str(tmp_path / "state"), "--out", str(out)) == 0
    office = parse((out / "office/wg_office.conf").read_text())
    assert one(office, 1, "AllowedIPs") == "10.77.0.0/16, 10.99.0.0/24"
    assert one(office, 1, "PersistentKeepalive") == "10"
    assert one(office, 0, "Table") == "off"  # FRR runs there
    assert "ListenPort" not in office[0][1]
    entry = parse((out / "entry/wg_office.conf").read_text())
    assert one(entry, 0, "Table") == "1234"
    assert one(entry, 1, "AllowedIPs") == "0.0.0.0/0, ::/0"
    assert "PersistentKeepalive" not in entry[1][1]
    uk = parse((out / "uk/wg_uk_x.conf").read_text())
    assert len(uk[0][1]["PostUp"]) == len(uk[0][1]["PostDown"]) == 4
    assert "PostUp" not in entry[0][1]
    assert "PresharedKey" not in entry[1][1]


def test_an_office_that_sends_all_routes_its_subnets_into_the_tunnel(
    write_schema: Callable[[str], Path], tmp_path: Path
) -> None:
    """``send: all``: wg-quick hooks put the office's LAN traffic into its tunnel to the
    entry, but for what main routes more specifically (the LAN, OSPF's routes)."""
    text = MESH.replace(
        "subnets: [10.88.0.0/24]}", 'subnets: [10.88.0.0/24, "fd88::/64"], send: all}'
    )
    text = text.replace(
        "office: {keepalive: 10, allowed_nets: [10.77.0.0/16, 10.99.0.0/24]}", "office: {}"
    )
    text += "ingress: [wg_office]\n"
    out = tmp_path / "out"
    schema = write_schema(text)
    assert render(str(schema), "--state-dir", str(tmp_path / "state"), "--out", str(out)) == 0
    office = parse((out / "office/wg_office.conf").read_text())[0][1]
    assert office["PostUp"] == [
        "ip rule add from 10.88.0.0/24 lookup main suppress_prefixlength 0 priority 30000",
        "ip rule add from 10.88.0.0/24 lookup 30001 priority 30001",
        "ip -6 rule add from fd88::/64 lookup main suppress_prefixlength 0 priority 30000",
        "ip -6 rule add from fd88::/64 lookup 30001 priority 30001",
        "ip route replace default dev %i table 30001",
        "ip -6 route replace default dev %i table 30001",
    ]
    assert len(office["PostDown"]) == 6
    assert "PostUp" not in parse((out / "entry/wg_office.conf").read_text())[0][1]


def test_the_clients_interface_has_a_peer_per_client(schema: Path, tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    assert render(str(schema), "--state-dir", str(state), "--out", str(out)) == 0
    conf = parse((out / "entry/wg-clients.conf").read_text())
    assert [s for s, _ in conf] == ["Interface", "Peer", "Peer"]
    assert (one(conf, 0, "Address"), one(conf, 0, "ListenPort")) == ("10.77.2.1/24", "51820")
    keys = KeyStore(state)
    assert [(one(conf, i, "PublicKey"), one(conf, i, "AllowedIPs")) for i in (1, 2)] == [
        (public_of(keys.client_private("phone")), "10.77.2.2/32"),
        (public_of(keys.client_private("laptop")), "10.77.2.10/32"),
    ]


def test_stdout_hides_the_keys_unless_asked(
    schema: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    assert render(str(schema), "--state-dir", str(state)) == 0
    shown = capsys.readouterr()
    secrets = [p.read_text().strip() for p in (state / "keys").rglob("*") if p.is_file()]
    assert len(secrets) == 10
    assert not [s for s in secrets if s in shown.out]
    headers = [line[2:] for line in shown.out.splitlines() if line.endswith(".conf")]
    assert sorted(headers) == sorted(EXPECTED)
    assert (
        f"# PrivateKey = (hidden: --show-keys prints it, or see {state}/keys/uk/wg_uk_x.key)"
        in (shown.out)
    )
    assert f"or see {state}/keys/tunnels/wg_uk.psk)" in shown.out
    assert "mt: a RouterOS peer, skipped" in shown.err

    assert render(str(schema), "--state-dir", str(state), "--show-keys") == 0
    out = capsys.readouterr().out
    assert (state / "keys/uk/wg_uk_x.key").read_text().strip() in out
    assert (state / "keys/tunnels/wg_uk.psk").read_text().strip() in out
    assert "hidden" not in out


def test_one_node(schema: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert (
        render(str(schema), "--state-dir", str(tmp_path / "s"), "--node", "uk", "--out", str(out))
        == 0
    )
    assert set(tree(out)) == {"uk/wg_uk_x.conf"}
    assert capsys.readouterr().err == ""


def test_a_side_whose_key_is_kept_elsewhere_is_skipped(
    write_schema: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    given = public_of(KeyStore(tmp_path / "theirs").private("uk", "wg_uk_x"))
    path = write_schema(
        MESH.replace("masquerade: true,", f"masquerade: true, public_key: '{given}',")
    )
    out = tmp_path / "out"
    assert render(str(path), "--state-dir", str(tmp_path / "state"), "--out", str(out)) == 0
    assert set(tree(out)) == EXPECTED - {"uk/wg_uk_x.conf"}
    err = capsys.readouterr().err
    assert "uk/wg_uk_x.conf: skipped, its private key is kept elsewhere" in err
    assert one(parse((out / "entry/wg_uk.conf").read_text()), 1, "PublicKey") == given
    assert not (tmp_path / "state/keys/uk").exists()


def test_a_private_key_file_is_used(
    write_schema: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = KeyStore(tmp_path / "elsewhere").private("x", "y")
    key_file = tmp_path / "uk.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    path = write_schema(MESH.replace("masquerade: true,", f"private_key_file: {key_file},"))
    assert render(str(path), "--state-dir", str(tmp_path / "state"), "--node", "uk") == 0
    assert f"# PrivateKey = (hidden: --show-keys prints it, or see {key_file})" in (
        capsys.readouterr().out
    )
    out = tmp_path / "out"
    assert render(str(path), "--state-dir", str(tmp_path / "state"), "--out", str(out)) == 0
    assert one(parse((out / "uk/wg_uk_x.conf").read_text()), 0, "PrivateKey") == key
    assert one(parse((out / "entry/wg_uk.conf").read_text()), 1, "PublicKey") == public_of(key)


@pytest.mark.parametrize(
    ("change", "extra", "message"),
    [
        (None, ["--node", "nowhere"],
         "no node 'nowhere' in the schema (nodes: entry, uk, office, mt)"),
        (None, ["--node", "mt"],
         "node 'mt' is a RouterOS peer (mikrotik: true): use `iptserver render routeros"),
        ("missing", [], "cannot read the private key file {file}: it does not exist"),
        ("garbage", [], "the private key in {file} is not a WireGuard key"),
        ("unreadable-dir", [], "cannot read the key file {state}/keys/entry/wg_uk.key"),
    ],
    ids=["unknown-node", "mikrotik-node", "missing-key-file", "bad-key-file", "state-not-a-dir"],
)  # fmt: skip
def test_errors_are_one_line_and_exit_2(
    write_schema: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: str | None,
    extra: list[str],
    message: str,
) -> None:
    key_file, state = tmp_path / "uk.key", tmp_path / "state"
    text = MESH
    if change in ("missing", "garbage"):
        text = MESH.replace("masquerade: true,", f"private_key_file: {key_file},")
    if change == "garbage":
        key_file.write_text("not a key\n")
    if change == "unreadable-dir":
        state.mkdir()
        (state / "keys").write_text("a file where the key directory should be")
    code = render(str(write_schema(text)), "--state-dir", str(state), *extra)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("iptserver render wireguard: ")
    assert message.format(file=key_file, state=state) in err


# -- real wg-quick and wireguard-go ------------------------------------------------------


def test_every_rendered_file_passes_wg_quick_strip_and_wg_setconf(
    schema: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert render(str(schema), "--state-dir", str(tmp_path / "state"), "--out", str(out)) == 0
    with Namespaces(tmp_path, "n") as net:
        iface = net.interface("s")
        net.wireguard_go("n", iface)
        for name in sorted(EXPECTED):
            stripped = net.run("n", ["wg-quick", "strip", str(out / name)]).stdout
            assert "Address" not in stripped and "PostUp" not in stripped
            conf_file = tmp_path / "stripped.conf"
            conf_file.write_text(stripped)
            net.run("n", ["wg", "setconf", iface, str(conf_file)])
            dump = net.run("n", ["wg", "show", iface, "dump"]).stdout.splitlines()
            rendered = parse((out / name).read_text())
            private, _, port, _ = dump[0].split("\t")
            assert private == one(rendered, 0, "PrivateKey"), name
            assert port == (rendered[0][1].get("ListenPort") or [port])[0], name
            # wg lists peers in its own order, not the file's.
            peers = {p[0]: p[3].replace(",", ", ") for p in (line.split("\t") for line in dump[1:])}
            assert peers == {
                one(rendered, i, "PublicKey"): one(rendered, i, "AllowedIPs")
                for i in range(1, len(rendered))
            }, name


def _whoami_server(
    net: Namespaces, node: str, family: int, address: str
) -> tuple[socket.socket, threading.Thread]:
    """A TCP server that answers each connection with the source address it saw."""
    server = socket_in(net.names[node], family)
    server.bind((address, 8080))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, peer = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(peer[0].encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def _ask(net: Namespaces, node: str, family: int, address: str) -> str:
    with socket_in(net.names[node], family) as sock:
        sock.settimeout(10)
        sock.connect((address, 8080))
        return sock.recv(100).decode()


def test_a_rendered_tunnel_comes_up_with_wg_quick_and_masquerades(
    write_schema: Callable[[str], Path], tmp_path: Path
) -> None:
    """a ==wg== b -- far: b dials a; far has no route to the tunnel, so only b's NAT lets
    a reach it; far sees b's address, IPv4 and IPv6."""
    with Namespaces(tmp_path, "a", "b", "far") as net:
        if_a, if_b = net.interface("a"), net.interface("b")
        path = write_schema(
            f"""
exits: {{}}
nodes:
  a: {{endpoint: 198.19.77.1}}
  b: {{endpoint: 198.19.77.2}}
tunnels:
  t:
    subnet: 10.99.77.0/30
    preshared_key: true
    hosts:
      a: {{expose: 51999, interface: {if_a}}}
      b: {{masquerade: true, interface: {if_b}, allowed_nets: [10.99.77.0/30, "fd00:77::/64"]}}
"""
        )
        out = tmp_path / "out"
        assert render(str(path), "--state-dir", str(tmp_path / "state"), "--out", str(out)) == 0
        net.veth("a", "up0", "b", "down0")
        net.veth("b", "far0", "far", "near0")
        net.run("a", ["ip", "addr", "add", "198.19.77.1/30", "dev", "up0"])
        net.run("a", ["ip", "link", "set", "up0", "up"])
        net.run("b", ["ip", "addr", "add", "198.19.77.2/30", "dev", "down0"])
        net.run("b", ["ip", "link", "set", "down0", "up"])
        net.run("b", ["ip", "addr", "add", "198.19.78.1/30", "dev", "far0"])
        net.run("b", ["ip", "addr", "add", "2001:db8:78::1/64", "dev", "far0", "nodad"])
        net.run("b", ["ip", "link", "set", "far0", "up"])
        net.run("far", ["ip", "addr", "add", "198.19.78.2/30", "dev", "near0"])
        net.run("far", ["ip", "addr", "add", "2001:db8:78::2/64", "dev", "near0", "nodad"])
        net.run("far", ["ip", "link", "set", "near0", "up"])
        net.run("b", ["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])

        net.wg_quick("a", "up", out / "a" / f"{if_a}.conf")
        net.wg_quick("b", "up", out / "b" / f"{if_b}.conf")
        # IPv6 inside the tunnel: the schema's tunnel is IPv4, the NAT rules cover both.
        net.run("a", ["ip", "addr", "add", "fd00:77::1/64", "dev", if_a, "nodad"])
        net.run("b", ["ip", "addr", "add", "fd00:77::2/64", "dev", if_b, "nodad"])
        net.run("a", ["ip", "route", "add", "198.19.78.0/30", "dev", if_a])
        net.run("a", ["ip", "route", "add", "2001:db8:78::/64", "dev", if_a])

        servers = [
            _whoami_server(net, "far", socket.AF_INET, "198.19.78.2"),
            _whoami_server(net, "far", socket.AF_INET6, "2001:db8:78::2"),
            _whoami_server(net, "b", socket.AF_INET, "10.99.77.2"),
        ]
        try:
            # Across the tunnel, no NAT: b sees a's tunnel address.
            assert _ask(net, "a", socket.AF_INET, "10.99.77.2") == "10.99.77.1"
            handshake = net.run("a", ["wg", "show", if_a, "latest-handshakes"]).stdout.split()
            assert int(handshake[1]) > 0
            # Through the tunnel and out: far sees b.
            assert _ask(net, "a", socket.AF_INET, "198.19.78.2") == "198.19.78.1"
            seen6 = _ask(net, "a", socket.AF_INET6, "2001:db8:78::2")
            assert ipaddress.ip_address(seen6) == ipaddress.ip_address("2001:db8:78::1")
        finally:
            for server, _ in servers:
                server.close()

        assert "MASQUERADE" in net.run("b", ["iptables", "-t", "nat", "-S"]).stdout
        net.wg_quick("b", "down", out / "b" / f"{if_b}.conf")
        for tool in ("iptables", "ip6tables"):
            rules = net.run("b", [tool, "-t", "nat", "-S"]).stdout
            assert "MASQUERADE" not in rules and "connlabel" not in rules, rules


def test_interfaces_of_one_node_on_the_same_port_are_refused(
    write_schema: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only one of them could start: the schema check says so before anything is written."""
    path = write_schema(MESH.replace("entry: {expose: 51821}", "entry: {expose: 51820}"))
    assert render(str(path), "--state-dir", str(tmp_path / "state"), "--node", "entry") != 0
    err = capsys.readouterr().err
    assert "clients.port: UDP port 51820 is already listened on by node 'entry' " in err
    assert not (tmp_path / "state").exists()
