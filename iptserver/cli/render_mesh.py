"""``iptserver render wireguard|clients|routeros|frr``: the mesh's configs.

Each loads the schema, opens the key store (WireGuard keys, made on first use), runs the
pure renderer, then writes or prints the result. A render the mesh cannot give (unknown
node, unreadable key file, unwritable directory) is a :class:`RenderError` or a
:class:`KeyFileError`: one line on stderr, exit status 2 (see :func:`iptserver.cli.main`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from iptserver.cli.command import EXIT_OK, Commands, Handler, add_command
from iptserver.cli.output import emit, write_under
from iptserver.errors import IptserverError
from iptserver.mesh.keys import KeyStore
from iptserver.mesh.topology import Mesh, mesh_of
from iptserver.render.files import printable
from iptserver.render.wireguard import RenderError


def register(actions: Commands) -> None:
    frr = add_command(actions, "frr", _frr, "FRR configs (OSPF over the tunnels) per node")
    frr.add_argument("schema", metavar="SCHEMA", type=Path)
    frr.add_argument("--node", help="only this node's files")
    frr.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help="write DIR/NODE/frr.conf and daemons (default: print)",
    )
    frr.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        help="taken, as the other renders take it, and unused: FRR needs no keys",
    )
    wireguard = _mesh_command(
        actions, "wireguard", _wireguard, "wg-quick configs for the mesh's nodes"
    )
    wireguard.add_argument("--node", help="only this node's configs")
    clients = _mesh_command(
        actions, "clients", _clients, "wg-quick configs and QR codes for clients"
    )
    clients.add_argument("--client", metavar="NAME", help="only this client's config")
    clients.add_argument(
        "--qr", action="store_true", help="show each config as a QR code (it holds the key)"
    )
    routeros = _mesh_command(
        actions, "routeros", _routeros, "RouterOS v7 scripts for a MikroTik node"
    )
    routeros.add_argument("--node", required=True, help="the node (mikrotik: true)")


def _mesh_command(
    actions: Commands, name: str, handler: Handler, help: str
) -> argparse.ArgumentParser:
    """A command that renders with keys: where they live, where the files go."""
    parser = add_command(actions, name, handler, help)
    parser.add_argument("schema", metavar="SCHEMA", type=Path)
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        default=Path("/var/lib/iptserver"),
        help="keys live in DIR/keys, made on first use (default: /var/lib/iptserver)",
    )
    parser.add_argument(
        "--out", metavar="DIR", type=Path, help="write the files here, 0600 (default: print)"
    )
    parser.add_argument("--show-keys", action="store_true", help="print keys (without --out)")
    return parser


@contextlib.contextmanager
def disk_errors(error: type[IptserverError] = RenderError) -> Iterator[None]:
    """A key directory or output directory the operator must fix: one line (``error``),
    not a trace."""
    try:
        yield
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        raise error(f"{where}{e.strerror}") from e


def _mesh(schema: Path) -> Mesh:
    from iptserver.schema import load_schema

    return mesh_of(load_schema(schema).schema)


def _notes(command: str, notes: tuple[str, ...]) -> None:
    for note in notes:
        print(f"iptserver render {command}: {note}", file=sys.stderr)


def _frr(args: argparse.Namespace) -> int:
    from iptserver.render.frr import render_frr
    from iptserver.schema import load_schema

    with disk_errors():
        schema = load_schema(args.schema).schema
        result = render_frr(mesh_of(schema), schema, args.node)
        _notes("frr", result.notes)
        emit(result.files, args.out, show_keys=True)  # FRR files hold no secrets
    return EXIT_OK


def _wireguard(args: argparse.Namespace) -> int:
    from iptserver.render.wireguard import render_wireguard

    with disk_errors():
        result = render_wireguard(_mesh(args.schema), KeyStore(args.state_dir), args.node)
        _notes("wireguard", result.notes)
        emit(result.files, args.out, show_keys=args.show_keys)
    return EXIT_OK


def _clients(args: argparse.Namespace) -> int:
    """The clients' configs, each beside its QR code as a PNG when written."""
    from iptserver.render.clients import qr_png, qr_terminal, render_clients

    with disk_errors():
        result = render_clients(_mesh(args.schema), KeyStore(args.state_dir), args.client)
        _notes("clients", result.notes)
        if args.out is None:
            sys.stdout.write(printable(result.files, show_keys=args.show_keys))
        else:
            written = [
                each
                for f in result.files
                for each in ((f.path, f.data), (f.path.with_suffix(".png"), qr_png(f.text)))
            ]
            write_under(args.out, written)
        if args.qr:
            for rendered in result.files:
                print(f"\n# {rendered.path} (QR code; it holds the private key)")
                sys.stdout.write(qr_terminal(rendered.text))
    return EXIT_OK


def _routeros(args: argparse.Namespace) -> int:
    from iptserver.render.routeros import render_routeros

    with disk_errors():
        result = render_routeros(_mesh(args.schema), KeyStore(args.state_dir), args.node)
        emit(result.files, args.out, show_keys=args.show_keys)
    return EXIT_OK
