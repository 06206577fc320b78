"""`iptserver render clients`: a client's config, its QR code (PNG and terminal) decoding to
exactly that text, stable bytes, and a config that really connects to the entry."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from iptserver.cli import main
from iptserver.lab.netns import socket_in
from iptserver.mesh.keys import KeyStore, public_of
from tests.render.test_wireguard import MESH, one, parse, tree
from tests.render.wgnet import Namespaces

CLIENTS = MESH.replace(
    "peers: {phone: {}, laptop: {address: 10.77.2.10}}",
    "dns: [10.77.1.1, 10.77.1.2]\n  keepalive: 15\n"
    "  peers: {phone: {}, laptop: {address: 10.77.2.10}}",
)


def render(*args: str) -> int:
    return main(["render", "clients", *args])


@pytest.fixture
def schema(write_schema: Callable[[str], Path]) -> Path:
    return write_schema(CLIENTS)


def zbar(image: Path) -> str:
    """What zbarimg (a QR reader independent of the one that wrote it) decodes."""
    done = subprocess.run(
        ["zbarimg", "--raw", "-q", "-Sbinary", str(image)], capture_output=True, check=True
    )
    return done.stdout.decode("utf-8")


_HALVES = {"█": (0, 0), " ": (1, 1), "▀": (0, 1), "▄": (1, 0)}  # (top, bottom) dark?


def terminal_to_pbm(text: str, path: Path, scale: int = 4) -> None:
    """The terminal QR (light modules drawn, two rows a character) as a PBM image."""
    rows: list[list[int]] = []
    for line in text.splitlines():
        top, bottom = zip(*(_HALVES[c] for c in line), strict=True)
        rows += [list(top), list(bottom)]
    pixels = [[bit for bit in row for _ in range(scale)] for row in rows for _ in range(scale)]
    body = "\n".join(" ".join(map(str, row)) for row in pixels)
    path.write_text(f"P1\n{len(pixels[0])} {len(pixels)}\n{body}\n")


def test_the_config_carries_the_client_and_the_entry(schema: Path, tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    assert render(str(schema), "--state-dir", str(state), "--out", str(out)) == 0
    assert set(tree(out)) == {"phone.conf", "phone.png", "laptop.conf", "laptop.png"}
    keys = KeyStore(state)
    laptop = parse((out / "laptop.conf").read_text())
    assert laptop == [
        (
            "Interface",
            {
                "PrivateKey": [keys.client_private("laptop")],
                "Address": ["10.77.2.10/32"],
                "DNS": ["10.77.1.1, 10.77.1.2"],
            },
        ),
        (
            "Peer",
            {
                "PublicKey": [keys.public("entry", "wg-clients")],
                "Endpoint": ["198.18.0.1:51820"],
                "AllowedIPs": ["0.0.0.0/0, ::/0"],
                "PersistentKeepalive": ["15"],
            },
        ),
    ]
    assert one(parse((out / "phone.conf").read_text()), 0, "Address") == "10.77.2.2/32"
    for name in ("phone.conf", "phone.png", "laptop.conf", "laptop.png"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600


def test_the_entry_config_and_the_client_configs_agree(schema: Path, tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    assert render(str(schema), "--state-dir", str(state), "--out", str(out)) == 0
    assert main(["render", "wireguard", str(schema), "--state-dir", str(state),
                 "--node", "entry", "--out", str(out)]) == 0  # fmt: skip
    entry = parse((out / "entry/wg-clients.conf").read_text())
    for i, name in enumerate(("phone", "laptop"), start=1):
        client = parse((out / f"{name}.conf").read_text())
        assert one(client, 1, "PublicKey") == public_of(one(entry, 0, "PrivateKey"))
        assert one(entry, i, "PublicKey") == public_of(one(client, 0, "PrivateKey"))
        assert one(entry, i, "AllowedIPs") == one(client, 0, "Address")
        assert one(client, 1, "Endpoint").endswith(f":{one(entry, 0, 'ListenPort')}")


def test_the_png_decodes_to_the_config_text_and_is_stable(schema: Path, tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    assert render(str(schema), "--state-dir", str(state), "--out", str(out)) == 0
    for name in ("phone", "laptop"):
        text = (out / f"{name}.conf").read_text()
        assert zbar(out / f"{name}.png") == text
    first = tree(out)
    stamps = {name: os.stat(out / name).st_mtime_ns for name in first}
    assert render(str(schema), "--state-dir", str(state), "--out", str(out)) == 0
    assert tree(out) == first
    assert {name: os.stat(out / name).st_mtime_ns for name in first} == stamps
    assert render(str(schema), "--state-dir", str(state), "--out", str(tmp_path / "again")) == 0
    assert tree(tmp_path / "again") == first


def test_the_terminal_qr_decodes_to_the_config_text_and_is_stable(
    schema: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    assert render(str(schema), "--state-dir", str(state), "--client", "phone", "--qr") == 0
    shown = capsys.readouterr().out
    assert render(str(schema), "--state-dir", str(state), "--client", "phone", "--qr") == 0
    assert capsys.readouterr().out == shown
    config, qr = shown.split("\n# phone.conf (QR code; it holds the private key)\n")
    assert "# PrivateKey = (hidden" in config  # the text stays hidden, the QR is the key
    assert render(str(schema), "--state-dir", str(state), "--client", "phone", "--show-keys") == 0
    text = capsys.readouterr().out.removeprefix("# phone.conf\n")
    assert set(qr) <= {*_HALVES, "\n"}
    terminal_to_pbm(qr, tmp_path / "qr.pbm")
    assert zbar(tmp_path / "qr.pbm") == text


def test_stdout_hides_the_client_keys(
    schema: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    assert render(str(schema), "--state-dir", str(state)) == 0
    shown = capsys.readouterr().out
    for name in ("phone", "laptop"):
        key = (state / "keys/clients" / f"{name}.key").read_text().strip()
        assert key not in shown
        where = state / "keys/clients" / f"{name}.key"
        hint = f"# PrivateKey = (hidden: --show-keys prints it, or see {where})"
        assert hint in shown
    assert render(str(schema), "--state-dir", str(state), "--show-keys") == 0
    assert (state / "keys/clients/phone.key").read_text().strip() in capsys.readouterr().out


def test_an_ipv6_client_gets_a_128(
    write_schema: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = MESH.replace("subnet: 10.77.2.0/24", "subnet: fd00:77:2::/64")
    path = write_schema(text.replace("address: 10.77.2.10", "address: 'fd00:77:2::a'"))
    assert render(str(path), "--state-dir", str(tmp_path / "s"), "--client", "phone") == 0
    conf = parse(capsys.readouterr().out)
    assert (one(conf, 0, "Address"), one(conf, 0, "DNS")) == ("fd00:77:2::2/128", "fd00:77:2::1")


@pytest.mark.parametrize(
    ("change", "extra", "message"),
    [
        (None, ["--client", "tablet"], "no client 'tablet' in the schema (clients: phone, laptop)"),
        ("public", ["--client", "phone"], "client 'phone' keeps its own private key"),
        ("no-endpoint", [], "clients cannot reach node 'entry': it has no endpoint"),
        ("no-clients", [], "the schema has no clients (clients.peers) to render"),
    ],
    ids=["unknown-client", "public-key-only", "no-endpoint", "no-clients"],
)
def test_errors_are_one_line_and_exit_2(
    write_schema: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: str | None,
    extra: list[str],
    message: str,
) -> None:
    text = CLIENTS
    if change == "public":
        given = public_of(KeyStore(tmp_path / "phone").client_private("phone"))
        text = CLIENTS.replace("phone: {}", f"phone: {{public_key: '{given}'}}")
    if change == "no-endpoint":
        text = CLIENTS.replace("entry: true, endpoint: 198.18.0.1,", "entry: true,")
    if change == "no-clients":
        text = CLIENTS.replace("peers: {phone: {}, laptop: {address: 10.77.2.10}}", "peers: {}")
    code = render(str(write_schema(text)), "--state-dir", str(tmp_path / "state"), *extra)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"iptserver render clients: {message}")


def test_a_client_with_only_a_public_key_is_skipped_with_a_note(
    write_schema: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    given = public_of(KeyStore(tmp_path / "phone").client_private("phone"))
    path = write_schema(CLIENTS.replace("phone: {}", f"phone: {{public_key: '{given}'}}"))
    out = tmp_path / "out"
    assert render(str(path), "--state-dir", str(tmp_path / "state"), "--out", str(out)) == 0
    assert set(tree(out)) == {"laptop.conf", "laptop.png"}
    assert "client 'phone' keeps its own private key" in capsys.readouterr().err


def test_a_client_config_connects_to_the_entry(
    write_schema: Callable[[str], Path], tmp_path: Path
) -> None:
    """The entry brings up its rendered clients interface with wg-quick; the phone loads
    its rendered config (wg-quick strip + wg setconf: DNS= needs resolvconf, which only
    a real phone has) and talks to the entry through the tunnel."""
    with Namespaces(tmp_path, "entry", "phone") as net:
        clients_if, phone_if = net.interface("c"), net.interface("p")
        path = write_schema(
            f"""
exits: {{}}
nodes:
  entry: {{entry: true, endpoint: 198.19.79.1}}
clients:
  node: entry
  interface: {clients_if}
  subnet: 10.77.9.0/24
  port: 51998
  peers: {{phone: {{}}, laptop: {{}}}}
"""
        )
        state, out = tmp_path / "state", tmp_path / "out"
        assert main(["render", "wireguard", str(path), "--state-dir", str(state),
                     "--out", str(out)]) == 0  # fmt: skip
        assert render(str(path), "--state-dir", str(state), "--out", str(out)) == 0
        net.veth("entry", "lan0", "phone", "wan0")
        net.run("entry", ["ip", "addr", "add", "198.19.79.1/30", "dev", "lan0"])
        net.run("entry", ["ip", "link", "set", "lan0", "up"])
        net.run("phone", ["ip", "addr", "add", "198.19.79.2/30", "dev", "wan0"])
        net.run("phone", ["ip", "link", "set", "wan0", "up"])
        net.wg_quick("entry", "up", out / "entry" / f"{clients_if}.conf")

        net.wireguard_go("phone", phone_if)
        stripped = tmp_path / f"{phone_if}.conf"
        stripped.write_text(net.run("phone", ["wg-quick", "strip", str(out / "phone.conf")]).stdout)
        net.run("phone", ["wg", "setconf", phone_if, str(stripped)])
        address = one(parse((out / "phone.conf").read_text()), 0, "Address")
        net.run("phone", ["ip", "addr", "add", address, "dev", phone_if])
        net.run("phone", ["ip", "link", "set", phone_if, "up"])
        net.run("phone", ["ip", "route", "add", "10.77.9.0/24", "dev", phone_if])

        server = socket_in(net.names["entry"], socket.AF_INET)
        server.bind(("10.77.9.1", 8080))
        server.listen()
        seen: list[str] = []

        def serve() -> None:
            conn, peer = server.accept()
            with conn:
                seen.append(peer[0])
                conn.sendall(b"hello")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket_in(net.names["phone"], socket.AF_INET) as sock:
                sock.settimeout(10)
                sock.connect(("10.77.9.1", 8080))
                assert sock.recv(5) == b"hello"
        finally:
            server.close()
        thread.join(5)
        assert seen == ["10.77.9.2"]
        dump = net.run("entry", ["wg", "show", clients_if, "latest-handshakes"]).stdout
        handshakes = dict(line.split("\t") for line in dump.splitlines())
        phone_key = public_of(KeyStore(state).client_private("phone"))
        assert int(handshakes[phone_key]) > 0
