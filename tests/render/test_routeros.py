"""`iptserver render routeros`: RouterOS v7 scripts for a MikroTik node. No RouterOS runs
here, so these check what can be checked without one: stable bytes, the same keys and
addresses as the other side's wg-quick config, string escaping, and the hooks' order."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from iptserver.cli import main
from iptserver.mesh.keys import KeyStore, public_of
from iptserver.render.routeros import MENUS
from tests.render.test_wireguard import one, parse, tree

HOOKS = {
    "first": "/ip firewall filter add chain=input in-interface=wg_mt action=accept "
    'comment="mesh \\"in\\" $x?"',
    "second": "/ip dns set servers=10.77.1.1",
    "cleanup": '/ip firewall filter remove [find comment="mesh \\"in\\" $x?"]',
    "other": "/system identity set name=mt-office",
}  # fmt: skip

MESH = f"""
exits:
  uk: {{interface: wg_uk}}
nodes:
  entry: {{entry: true, endpoint: 198.18.0.1, subnets: [10.77.1.0/24]}}
  uk: {{endpoint: 198.18.1.1}}
  mt: {{mikrotik: true, subnets: [10.88.5.0/24, 10.88.6.0/24], router_id: 10.255.0.9}}
tunnels:
  wg_uk:
    subnet: 10.99.0.0/30
    hosts:
      entry: {{expose: true}}
      uk: {{expose: true}}
  wg_mt:
    subnet: 10.99.0.8/30
    preshared_key: true
    hosts:
      entry: {{expose: true}}
      mt:
        masquerade: true
        ospf_cost: 20
        allowed_nets: [10.77.0.0/16, 10.99.0.0/24]
        mikrotik_deploy: {json.dumps([HOOKS["first"], HOOKS["second"]])}
        mikrotik_cleanup: {json.dumps([HOOKS["cleanup"]])}
  wg_mt2:
    subnet: 10.99.0.12/30
    hosts:
      mt: {{expose: 51900, mikrotik_deploy: {json.dumps([HOOKS["other"]])}}}
      uk: {{}}
"""


def render(*args: str) -> int:
    return main(["render", "routeros", *args])


@pytest.fixture
def schema(write_schema: Callable[[str], Path]) -> Path:
    return write_schema(MESH)


def unquote(literal: str) -> str:
    """A RouterOS string literal's value (the escapes ``ros_string`` makes)."""
    assert literal.startswith('"') and literal.endswith('"'), literal
    return re.sub(
        r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m[1], m[1]), literal[1:-1]
    )


def argument(line: str, name: str) -> str:
    """The value of ``name=...`` in a RouterOS command line (quoted or not)."""
    found = re.search(rf'(?:^| ){re.escape(name)}=("(?:[^"\\]|\\.)*"|\S+)', line)
    assert found, f"{name} not in {line}"
    value = found[1]
    return unquote(value) if value.startswith('"') else value


def lines_of(path: Path, start: str) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith(start)]


def rendered(schema: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    state = str(tmp_path / "state")
    assert render(str(schema), "--state-dir", state, "--node", "mt", "--out", str(out)) == 0
    assert main(["render", "wireguard", str(schema), "--state-dir", state, "--out", str(out)]) == 0
    return out


def test_the_scripts_are_stable_and_root_only(
    schema: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = rendered(schema, tmp_path)
    first = tree(out / "mt")
    assert set(first) == {"deploy.rsc", "cleanup.rsc"}
    for name in first:
        assert stat.S_IMODE((out / "mt" / name).stat().st_mode) == 0o600
    rendered(schema, tmp_path)
    assert tree(out / "mt") == first
    capsys.readouterr()
    state = str(tmp_path / "state")
    assert render(str(schema), "--state-dir", state, "--node", "mt", "--show-keys") == 0
    shown = capsys.readouterr().out
    assert shown == "# mt/deploy.rsc\n" + first["deploy.rsc"].decode() + (
        "\n# mt/cleanup.rsc\n" + first["cleanup.rsc"].decode()
    )


def test_the_script_carries_the_same_keys_and_addresses_as_the_entry(
    schema: Path, tmp_path: Path
) -> None:
    out = rendered(schema, tmp_path)
    deploy = out / "mt/deploy.rsc"
    entry = parse((out / "entry/wg_mt.conf").read_text())
    (interface,) = [
        line for line in lines_of(deploy, "/interface wireguard add ") if '"wg_mt"' in line
    ]
    (peer,) = [
        line for line in lines_of(deploy, "/interface wireguard peers add ") if '"wg_mt"' in line
    ]
    assert public_of(argument(interface, "private-key")) == one(entry, 1, "PublicKey")
    assert argument(peer, "public-key") == public_of(one(entry, 0, "PrivateKey"))
    assert argument(peer, "preshared-key") == one(entry, 1, "PresharedKey")
    assert argument(peer, "endpoint-address") == "198.18.0.1"
    assert argument(peer, "endpoint-port") == one(entry, 0, "ListenPort")
    assert argument(peer, "allowed-address") == "10.77.0.0/16,10.99.0.0/24"
    assert argument(peer, "persistent-keepalive") == "25s"  # it dials out
    assert "listen-port" not in interface
    (address,) = [line for line in lines_of(deploy, "/ip address add") if '"wg_mt"' in line]
    assert argument(address, "address") == "10.99.0.10/30"
    assert one(entry, 0, "Address") == "10.99.0.9/30"
    # The tunnel where the router listens: uk dials its port.
    uk = parse((out / "uk/wg_mt2.conf").read_text())
    (listening,) = [
        line for line in lines_of(deploy, "/interface wireguard add ") if '"wg_mt2"' in line
    ]
    assert argument(listening, "listen-port") == "51900"
    assert one(uk, 1, "PublicKey") == public_of(argument(listening, "private-key"))
    assert "Endpoint" not in uk[1][1]  # mt has no endpoint in the schema: uk cannot dial it
    assert KeyStore(tmp_path / "state").private("mt", "wg_mt") == argument(interface, "private-key")


def test_ospf_matches_the_linux_nodes(schema: Path, tmp_path: Path) -> None:
    deploy = rendered(schema, tmp_path) / "mt/deploy.rsc"
    (instance,) = lines_of(deploy, "/routing ospf instance add")
    assert (argument(instance, "version"), argument(instance, "router-id")) == ("2", "10.255.0.9")
    (area,) = lines_of(deploy, "/routing ospf area add")
    assert argument(area, "area-id") == "0.0.0.0"
    templates = lines_of(deploy, "/routing ospf interface-template add")
    tunnels = [t for t in templates if "interfaces=" in t]
    assert [argument(t, "interfaces") for t in tunnels] == ["wg_mt", "wg_mt2"]
    for template in tunnels:
        assert argument(template, "type") == "ptp"
        assert argument(template, "hello-interval") == "1s"
        assert argument(template, "dead-interval") == "4s"
    assert argument(tunnels[0], "cost") == "20" and "cost=" not in tunnels[1]
    (subnets,) = [t for t in templates if "networks=" in t]
    assert argument(subnets, "networks") == "10.88.5.0/24,10.88.6.0/24"
    assert subnets.split(" comment=")[0].endswith(" passive")


def test_hook_commands_run_verbatim_and_are_escaped_in_strings(
    schema: Path, tmp_path: Path
) -> None:
    out = rendered(schema, tmp_path)
    deploy, cleanup = (out / "mt/deploy.rsc").read_text(), (out / "mt/cleanup.rsc").read_text()
    assert HOOKS["first"] + "\n" in deploy.splitlines(keepends=True)
    logged = [
        unquote(line.removeprefix(":log info "))
        for line in deploy.splitlines()
        if line.startswith(":log info ")
    ]
    assert logged[0] == f"iptserver: wg_mt mikrotik_deploy 1/2: {HOOKS['first']}"
    assert '\\"mesh \\\\\\"in\\\\\\" \\$x\\?\\"' in deploy  # " \ $ ? escaped in the log string
    (wrapped,) = [line for line in cleanup.splitlines() if line.startswith(":do {")]
    assert wrapped.startswith(f":do {{ {HOOKS['cleanup']} }} on-error={{ :log warning ")
    warning = wrapped.split(":log warning ", 1)[1].removesuffix(" }")
    assert unquote(warning) == f"iptserver: wg_mt mikrotik_cleanup 1/1 failed: {HOOKS['cleanup']}"


def test_the_hooks_run_in_order_after_the_mesh_is_set_up(schema: Path, tmp_path: Path) -> None:
    out = rendered(schema, tmp_path)
    deploy = (out / "mt/deploy.rsc").read_text().splitlines()
    cleanup = (out / "mt/cleanup.rsc").read_text().splitlines()
    hooks = [deploy.index(HOOKS[name]) for name in ("first", "second", "other")]
    assert hooks == sorted(hooks)  # in schema order, tunnel by tunnel
    made = [i for i, line in enumerate(deploy) if line.startswith("/") and " add " in line]
    made = [i for i in made if deploy[i] not in HOOKS.values()]
    assert max(made) < hooks[0]
    removals = [f'{menu} remove [find where comment~"^iptserver"]' for menu in MENUS]
    assert deploy[3 : 3 + len(MENUS)] == removals  # first the previous run's objects go
    assert cleanup[2 : 2 + len(MENUS)] == removals
    assert HOOKS["cleanup"] not in "\n".join(deploy)
    assert not [h for h in ("first", "second", "other") if HOOKS[h] in "\n".join(cleanup)]
    # every object the deploy script adds is tagged, so the removals catch it
    for index in made:
        assert argument(deploy[index], "comment").startswith("iptserver: "), deploy[index]
    # and lives in a menu the removals sweep
    menus = {re.match(r"^(/[a-z0-9 -]+?) add ", deploy[i])[1] for i in made}  # type: ignore[index]
    assert menus <= set(MENUS)


def test_keys_are_hidden_unless_asked(
    schema: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    assert render(str(schema), "--state-dir", str(state), "--node", "mt") == 0
    shown = capsys.readouterr().out
    for path in (state / "keys").rglob("*"):
        if path.is_file() and path.parent.name in ("mt", "tunnels"):
            assert path.read_text().strip() not in shown
    assert (
        f'private-key="(hidden: --show-keys prints it, or see {state}/keys/mt/wg_mt.key)"' in shown
    )
    assert f"or see {state}/keys/tunnels/wg_mt.psk)" in shown


def test_a_router_that_keeps_its_own_key(
    write_schema: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    given = public_of(KeyStore(tmp_path / "router").private("mt", "wg_mt"))
    path = write_schema(
        MESH.replace(
            "        masquerade: true\n",
            f"        masquerade: true\n        public_key: '{given}'\n",
        )
    )
    out = rendered(path, tmp_path)
    deploy = (out / "mt/deploy.rsc").read_text()
    assert '/interface wireguard add name="wg_mt"' not in deploy
    assert f"whose public key is {given}" in deploy and ":error" in deploy
    assert one(parse((out / "entry/wg_mt.conf").read_text()), 1, "PublicKey") == given
    assert not (tmp_path / "state/keys/mt/wg_mt.key").exists()


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("entry", "node 'entry' is not a RouterOS peer (set nodes.entry.mikrotik: true); "
                  "for a Linux node use `iptserver render wireguard --node entry`"),
        ("nowhere", "no node 'nowhere' in the schema (nodes: entry, uk, mt)"),
    ],
    ids=["not-mikrotik", "unknown"],
)  # fmt: skip
def test_only_a_mikrotik_node_is_rendered(
    schema: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], node: str, message: str
) -> None:
    code = render(str(schema), "--state-dir", str(tmp_path / "state"), "--node", node)
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"iptserver render routeros: {message}\n"
