"""``iptserver run``: the daemon, with the command line's overrides of the schema."""

from __future__ import annotations

import argparse
from pathlib import Path

from iptserver.cli.command import (
    Commands,
    add_command,
    add_endpoints_option,
    add_geoip_option,
    endpoint,
)


def register(commands: Commands) -> None:
    run = add_command(commands, "run", _run, "run the dataplane and the DNS proxy (root)")
    run.add_argument("--config", required=True, metavar="SCHEMA", type=Path)
    add_geoip_option(run)
    add_endpoints_option(run, "--listen", "DNS proxy address (repeatable; overrides dns.listen)")
    add_endpoints_option(run, "--upstream", "recursor (repeatable; overrides dns.upstream)")
    run.add_argument(
        "--api",
        metavar="ADDR:PORT",
        type=endpoint,
        help="HTTP API address (overrides api.listen; keep it on loopback)",
    )
    run.add_argument(
        "--api-token-file",
        metavar="FILE",
        type=Path,
        help="file holding the bearer token the API's POST endpoints require",
    )
    run.add_argument(
        "--keep-state",
        action="store_true",
        help="leave sets, rules and routes in place on exit (for a restart)",
    )
    run.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        help="remember the exits' marks and tables here, for restarts with --keep-state, "
        "and keep the last good copy of each downloaded list (in DIR/lists)",
    )
    run.add_argument(
        "--workers",
        metavar="N",
        type=_workers,
        default=1,
        help="processes answering DNS on the same addresses (default 1; not with export_table)",
    )
    run.add_argument(
        "--node",
        metavar="NAME",
        help="the entry this daemon runs on, for a schema with several entries: its own "
        "names for the exits' and ingress interfaces and its tunnel addresses",
    )
    run.add_argument(
        "--fail-closed",
        action="store_true",
        help="answer SERVFAIL when the kernel cannot be programmed",
    )


def _workers(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes from 1 to 64")
    return int(text)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    import uvloop

    from iptserver.daemon import Daemon, Options

    options = Options(
        config=args.config,
        geoip=args.geoip,
        listen=tuple(args.listen),
        upstream=tuple(args.upstream),
        keep_state=args.keep_state,
        fail_closed=args.fail_closed,
        state_dir=args.state_dir,
        api=args.api,
        api_token_file=args.api_token_file,
        workers=args.workers,
        node=args.node,
        lists_dir=args.state_dir / "lists" if args.state_dir is not None else None,
    )
    # uvloop: the proxy's sockets and timers cost a fraction of asyncio's own.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(Daemon(options).run())
