"""The ``iptserver`` command line. The only place that configures logging.

One module per command group, each adding its commands with ``register(commands)``:
:mod:`~iptserver.cli.run`, :mod:`~iptserver.cli.schema` (check, convert, json-schema,
explain), :mod:`~iptserver.cli.render` (and :mod:`~iptserver.cli.render_mesh`),
:mod:`~iptserver.cli.lists`, :mod:`~iptserver.cli.geoip`, :mod:`~iptserver.cli.lab` (demo).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from iptserver import __version__
from iptserver.cli import clients, geoip, lab, lists, render, run, schema
from iptserver.cli.command import EXIT_FAILURE, EXIT_USAGE
from iptserver.errors import IptserverError, KeyFileError, SchemaError, UsageError
from iptserver.render.wireguard import RenderError

__all__ = ["main", "parser"]

# Errors that say the command line asked for what cannot be given (exit status 2).
USAGE_ERRORS = (UsageError, RenderError, KeyFileError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status.

    Exit status policy, for every command:

    * 0: done.
    * 1: the command ran and failed: a schema or compose file that does not load or
      check, a GeoIP database, the kernel, the lab (any other ``IptserverError``), or
      a command's own finding (``check``: a bad schema; ``demo``: a wrong prediction).
    * 2: the command line asked for what cannot be given, as argparse's own usage
      errors: a value that does not parse (a query, a country, an IP), a node or client
      the mesh does not have, a render its keys or directories do not allow.

    An ``IptserverError`` is caught here only: one line on stderr after the command's
    name (a schema error's lines name file:line:column themselves), no traceback.
    """
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=log_level(args), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.handler(args))
    except IptserverError as e:
        print(e if isinstance(e, SchemaError) else f"{args.prog}: {e}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, USAGE_ERRORS) else EXIT_FAILURE


def log_level(args: argparse.Namespace) -> int:
    """``--log-level``, else the command's own: the daemon says what it does at INFO, the
    one-shot commands only what goes wrong."""
    name: str = args.log_level or ("info" if args.command == "run" else "warning")
    level: int = getattr(logging, name.upper())
    return level


def parser() -> argparse.ArgumentParser:
    """Every command's arguments (what ``main`` parses)."""
    top = argparse.ArgumentParser(
        prog="iptserver", description="DNS-driven policy router for a WireGuard VPN entrypoint"
    )
    top.add_argument("--version", action="version", version=f"iptserver {__version__}")
    top.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default: info for run (starts, reloads, stops), warning for the rest",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (run, schema, lists, clients, render, geoip, lab):
        group.register(commands)
    return top
