"""``iptserver render ...``: configuration for the programs around iptserver.

This module registers the group and renders what is not the mesh (the PowerDNS Recursor
plugin's settings, the compose override); the mesh's configs (WireGuard, RouterOS, FRR)
are in :mod:`iptserver.cli.render_mesh`. The renderers themselves are pure, in
:mod:`iptserver.render`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from iptserver.cli import render_mesh
from iptserver.cli.command import (
    EXIT_OK,
    Commands,
    add_command,
    add_endpoints_option,
    endpoint,
    network,
)
from iptserver.cli.output import write_or_print


def register(commands: Commands) -> None:
    render = commands.add_parser("render", help="configuration for the programs around iptserver")
    actions = render.add_subparsers(dest="render_command", required=True, metavar="ACTION")
    _register_recursor(actions)
    render_mesh.register(actions)
    _register_compose(actions)
    _register_systemd(actions)


def _register_recursor(actions: Commands) -> None:
    recursor = add_command(actions, "recursor", _recursor, "PowerDNS Recursor: load the plugin")
    recursor.add_argument(
        "--api",
        metavar="ADDR:PORT",
        type=endpoint,
        default="127.0.0.1:8053",
        help="iptserver's HTTP API (default: 127.0.0.1:8053)",
    )
    recursor.add_argument(
        "--fail-closed", action="store_true", help="SERVFAIL when iptserver cannot be asked"
    )
    recursor.add_argument(
        "--transport",
        choices=["udp", "http", "ffi"],
        default="udp",
        help="udp: a datagram to the API's port, the waiting query parked, not the thread "
        "(default); ffi: the same datagram from the plugin's own socket, blocking the "
        "recursor's thread (not with kernel.export_table); http: POST /v1/answers, blocking "
        "the recursor's thread",
    )
    recursor.add_argument(
        "--timeout", type=float, help="http, ffi: seconds (default: http 0.5, ffi 0.2)"
    )
    recursor.add_argument("--api-token-file", metavar="FILE", type=Path)
    recursor.add_argument(
        "--per-client",
        action="store_true",
        help="the schema has rules with sources: turn the packet cache off, so every "
        "answer reaches iptserver with its client (udp and http transports)",
    )
    recursor.add_argument("--plugin", metavar="LUA", type=Path, help="the plugin's path")
    recursor.add_argument(
        "--out-dir", metavar="DIR", type=Path, help="write the files here (default: print)"
    )


def _recursor(args: argparse.Namespace) -> int:
    from iptserver.render.recursor import (
        DEFAULT_DIR,
        DEFAULT_PLUGIN,
        RecursorSettings,
        render_recursor,
    )

    settings = RecursorSettings(
        api=args.api,
        plugin=(args.plugin or DEFAULT_PLUGIN).resolve(),
        directory=(args.out_dir or DEFAULT_DIR).resolve(),
        fail_closed=args.fail_closed,
        timeout=args.timeout,
        token_file=args.api_token_file.resolve() if args.api_token_file else None,
        transport=args.transport,
        per_client=args.per_client,
    )
    files = render_recursor(settings)
    if args.out_dir is None:
        for name, text in files.items():
            print(f"# --- {settings.directory / name} ---\n{text}")
        return EXIT_OK
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        write_or_print(text, args.out_dir / name)
        print(args.out_dir / name)
    return EXIT_OK


def _register_compose(actions: Commands) -> None:
    compose = add_command(
        actions,
        "compose",
        _compose,
        "docker compose: iptserver and tunnels beside a service, or a node's own stack",
    )
    compose.add_argument(
        "--compose-file", metavar="FILE", type=Path, help="override mode: the user's file"
    )
    compose.add_argument("--service", metavar="NAME", help="the service whose network to join")
    compose.add_argument(
        "--stack",
        metavar="NODE",
        nargs="?",
        const="",
        help="stack mode: a standalone stack for this exit or office node (its tunnels, "
        "kill-switch and FRR), written to --out DIR/NODE/; without NODE, one for every "
        "node with compose: true",
    )
    compose.add_argument(
        "--config", metavar="SCHEMA", type=Path, default=Path("iptserver.yaml"), help="schema"
    )
    compose.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        default=Path("iptserver-state"),
        help="iptserver's state; WireGuard keys in DIR/keys, made on first use, mounted "
        "read-only into the tunnel containers",
    )
    compose.add_argument("--frr-dir", metavar="DIR", type=Path, default=Path("frr"))
    compose.add_argument(
        "--node",
        help="override mode: the node whose tunnel ends run here (default: the entry; "
        "with several entries, the entry's name: the daemon runs with --node too)",
    )
    compose.add_argument(
        "--wireguard-dir",
        metavar="DIR",
        type=Path,
        help="override mode: where the tunnel containers' configs (no keys in them) are "
        "written (default: wireguard/ beside --output)",
    )
    compose.add_argument("--geoip", metavar="MMDB", type=Path, help="country database to mount")
    compose.add_argument("--image", default="iptserver:latest", help="the sidecar image")
    compose.add_argument(
        "--dns-listen",
        metavar="ADDR:PORT",
        type=endpoint,
        default="0.0.0.0:53",
        help="where the recursor answers the clients (default: 0.0.0.0:53)",
    )
    add_endpoints_option(
        compose,
        "--forward",
        "the recursor forwards every query here (repeatable; default: it recurses)",
    )
    compose.add_argument(
        "--allow-from",
        action="append",
        default=[],
        metavar="CIDR",
        type=network,
        help="clients the recursor answers (repeatable; default: the recursor's own)",
    )
    compose.add_argument(
        "-o", "--output", type=Path, help="override mode: file to write (default: stdout)"
    )
    compose.add_argument("--out", metavar="DIR", type=Path, help="stack mode: where to write")


def _compose(args: argparse.Namespace) -> int:
    from iptserver.errors import UsageError

    if args.stack is not None:
        if args.compose_file is not None or args.out is None:
            raise UsageError("--stack [NODE] writes stacks to --out DIR, without --compose-file")
        return _compose_stack(args)
    if args.compose_file is None or args.service is None:
        raise UsageError("give --compose-file FILE --service NAME, or --stack NODE --out DIR")
    return _compose_override(args)


def _compose_override(args: argparse.Namespace) -> int:
    from iptserver.mesh.keys import KeyStore
    from iptserver.mesh.topology import mesh_of
    from iptserver.render.compose import (
        ComposeError,
        ComposeSettings,
        compose_tunnels,
        read_compose,
        render_override,
        user_services,
    )
    from iptserver.render.files import write_all
    from iptserver.schema import load_schema

    if args.wireguard_dir is not None:
        wireguard_dir = args.wireguard_dir
    else:
        wireguard_dir = (args.output.parent if args.output else Path()) / "wireguard"
    settings = ComposeSettings(
        service=args.service,
        schema=args.config.resolve(),
        state_dir=args.state_dir.resolve(),
        frr_dir=args.frr_dir.resolve(),
        image=args.image,
        wireguard_dir=wireguard_dir.resolve(),
        geoip=args.geoip.resolve() if args.geoip else None,
        dns_listen=args.dns_listen,
        forward=tuple(args.forward),
        allow_from=tuple(args.allow_from),
    )
    if args.output is not None and args.output.resolve() == args.compose_file.resolve():
        raise ComposeError(f"{args.output}: the override must not replace the compose file")
    user = read_compose(args.compose_file)
    user_services(user, args.service, str(args.compose_file))  # before any key is made
    mesh = mesh_of(load_schema(args.config).schema)
    entries = [n.name for n in mesh.nodes.values() if n.entry]
    if len(entries) > 1:  # the daemon must know which entry it runs on
        if args.node not in entries:
            raise ComposeError(
                f"{args.config}: the schema has several entries ({', '.join(entries)}): "
                "say which one this override is for with --node"
            )
        settings = dataclasses.replace(settings, entry=args.node)
    node = args.node or next(iter(entries), None)
    with _disk_errors():
        tunnels = compose_tunnels(mesh, node, KeyStore(settings.state_dir)) if node else ()
        text = render_override(user, settings, str(args.compose_file), tunnels)
        configs = ((PurePosixPath(end.config.path.name), end.config.data) for end in tunnels)
        for path, written in write_all(settings.wireguard_dir, configs):
            print(f"{path}{'' if written else ' (unchanged)'}", file=sys.stderr)
    write_or_print(text, args.output)
    return EXIT_OK


def _compose_stack(args: argparse.Namespace) -> int:
    from iptserver.cli.output import write_under
    from iptserver.mesh.keys import KeyStore
    from iptserver.mesh.topology import mesh_of
    from iptserver.render.compose import ComposeError
    from iptserver.render.compose_stack import render_stack, stack_node
    from iptserver.render.frr import render_frr
    from iptserver.schema import load_schema

    schema = load_schema(args.config).schema
    mesh = mesh_of(schema)
    names = [args.stack] if args.stack else [n for n, spec in schema.nodes.items() if spec.compose]
    if not names:
        raise ComposeError(f"{args.config}: nodes: no node has compose: true (or: --stack NODE)")
    keys = KeyStore(args.state_dir.resolve())
    with _disk_errors():
        nodes = [stack_node(mesh, name) for name in names]
        for node in nodes:
            frr = render_frr(mesh, schema, node.name).files if node.ospf else ()
            files = render_stack(mesh, node.name, keys, args.image, frr)
            write_under(args.out, ((f.path, f.data) for f in files))
    return EXIT_OK


@contextlib.contextmanager
def _disk_errors() -> Iterator[None]:
    """A key or output directory the operator must fix: one line, not a traceback."""
    from iptserver.render.compose import ComposeError

    try:
        with render_mesh.disk_errors(ComposeError):
            yield
    except KeyError as e:  # an unknown node (Mesh.node says which exist)
        raise ComposeError(str(e.args[0])) from None


def _register_systemd(actions: Commands) -> None:
    unit = add_command(
        actions, "systemd", _systemd, "a systemd unit: iptserver run with network capabilities only"
    )
    unit.add_argument(
        "--config",
        metavar="SCHEMA",
        type=Path,
        default=Path("/etc/iptserver/iptserver.yaml"),
        help="the schema (default: /etc/iptserver/iptserver.yaml)",
    )
    unit.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        default=Path("/var/lib/iptserver"),
        help="kept state (default: /var/lib/iptserver)",
    )
    unit.add_argument("--geoip", metavar="MMDB", type=Path, help="country database")
    unit.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")


def _systemd(args: argparse.Namespace) -> int:
    from iptserver.render.systemd import UnitSettings, render_unit

    settings = UnitSettings(
        command=(sys.executable, "-m", "iptserver"),
        config=args.config.resolve(),
        state_dir=args.state_dir.resolve(),
        geoip=args.geoip.resolve() if args.geoip else None,
    )
    write_or_print(render_unit(settings), args.output)
    return EXIT_OK
