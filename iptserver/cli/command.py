"""What every command module shares: how a command registers, and its argument types."""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from iptserver.geoip import DEFAULT_DATABASE
from iptserver.schema.values import Endpoint, IPAddress, IPNetwork, parse_endpoint

if TYPE_CHECKING:
    from iptserver.lists.store import ListReader

# What ``add_subparsers`` returns: where a command module adds its commands.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and failed (see iptserver.cli.main)
EXIT_USAGE = 2  # the command line asked for what cannot be given, as argparse's errors


def add_command(
    commands: Commands, name: str, handler: Handler, help: str, **defaults: Any
) -> argparse.ArgumentParser:
    """A subcommand that runs ``handler``; its errors name it (``iptserver render frr: ...``)."""
    parser = commands.add_parser(name, help=help)
    parser.set_defaults(handler=handler, prog=parser.prog, **defaults)
    return parser


def endpoint(text: str) -> Endpoint:
    """``ADDR:PORT`` as an argument type: a bad one is argparse's usage error."""
    try:
        return parse_endpoint(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def address(text: str) -> IPAddress:
    """An IP address as an argument type."""
    try:
        return ipaddress.ip_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def network(text: str) -> IPNetwork:
    """A CIDR as an argument type; host bits are dropped."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_endpoints_option(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    """A repeatable ``ADDR:PORT`` option, collected into a list (empty: not given)."""
    parser.add_argument(
        flag, action="append", default=[], metavar="ADDR:PORT", type=endpoint, help=help
    )


def add_geoip_option(parser: argparse.ArgumentParser) -> None:
    """``--geoip MMDB`` as ``run`` and ``explain`` take it (read by ``open_geoip``)."""
    parser.add_argument(
        "--geoip",
        metavar="MMDB",
        type=Path,
        help=f"country database (default: {DEFAULT_DATABASE} if present)",
    )


def add_state_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--state-dir DIR``: the daemon's, whose ``lists/`` holds downloaded lists."""
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        help="the daemon's --state-dir: downloaded lists are read from DIR/lists",
    )


def lists_reader(args: argparse.Namespace) -> ListReader:
    """A ListReader of local lists and, with ``--state-dir``, the downloaded copies."""
    from iptserver.lists.store import ListCache, ListReader

    state_dir: Path | None = args.state_dir
    cache = ListCache(state_dir / "lists") if state_dir is not None else None
    return ListReader(cache, quiet=True)
