"""The mesh render commands (`iptserver render wireguard|clients|routeros`): load the
schema, open the key store, run the pure renderer, then write or print the result.

Errors an operator can fix (unknown node, unreadable key file, unwritable directory)
become one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from iptserver.errors import KeyFileError
from iptserver.mesh.keys import KeyStore
from iptserver.mesh.topology import Mesh, mesh_of
from iptserver.render.files import Rendered, printable, write_all
from iptserver.render.wireguard import RenderError, render_wireguard

EXIT_USAGE = 2


def _mesh(schema: Path) -> Mesh:
    from iptserver.schema import load_schema

    return mesh_of(load_schema(schema).schema)


def run_command(command: str, work: Callable[[], int]) -> int:
    """Run ``work``; an operator error becomes one line on stderr and exit code 2."""
    try:
        return work()
    except (RenderError, KeyFileError) as e:
        print(f"iptserver render {command}: {e}", file=sys.stderr)
    except OSError as e:
        where = f" {e.filename}:" if e.filename else ""
        print(f"iptserver render {command}:{where} {e.strerror}", file=sys.stderr)
    return EXIT_USAGE


def emit(files: tuple[Rendered, ...], out: Path | None, *, show_keys: bool) -> None:
    """Write under ``out`` (saying which files changed), or print with keys hidden."""
    if out is None:
        sys.stdout.write(printable(files, show_keys=show_keys))
        return
    for path, written in write_all(out, ((f.path, f.data) for f in files)):
        print(f"{path}{'' if written else ' (unchanged)'}")


def render_wireguard_command(
    schema: Path, state_dir: Path, node: str | None, out: Path | None, show_keys: bool
) -> int:
    def work() -> int:
        result = render_wireguard(_mesh(schema), KeyStore(state_dir), node)
        for note in result.notes:
            print(f"iptserver render wireguard: {note}", file=sys.stderr)
        emit(result.files, out, show_keys=show_keys)
        return 0

    return run_command("wireguard", work)


def render_clients_command(
    schema: Path,
    state_dir: Path,
    client: str | None,
    out: Path | None,
    qr: bool,
    show_keys: bool,
) -> int:
    def work() -> int:
        from iptserver.render.clients import qr_png, qr_terminal, render_clients

        result = render_clients(_mesh(schema), KeyStore(state_dir), client)
        for note in result.notes:
            print(f"iptserver render clients: {note}", file=sys.stderr)
        if out is None:
            sys.stdout.write(printable(result.files, show_keys=show_keys))
        else:
            files = [
                each
                for f in result.files
                for each in ((f.path, f.data), (f.path.with_suffix(".png"), qr_png(f.text)))
            ]
            written = write_all(out, files)
            for path, changed in written:
                print(f"{path}{'' if changed else ' (unchanged)'}")
        if qr:
            for rendered in result.files:
                print(f"\n# {rendered.path} (QR code; it holds the private key)")
                sys.stdout.write(qr_terminal(rendered.text))
        return 0

    return run_command("clients", work)


def render_routeros_command(
    schema: Path, state_dir: Path, node: str, out: Path | None, show_keys: bool
) -> int:
    def work() -> int:
        from iptserver.render.routeros import render_routeros

        result = render_routeros(_mesh(schema), KeyStore(state_dir), node)
        emit(result.files, out, show_keys=show_keys)
        return 0

    return run_command("routeros", work)
