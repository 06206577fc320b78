"""``iptserver lists show|update``: the lists a schema names, and their downloaded copies."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from iptserver.cli.command import (
    EXIT_FAILURE,
    EXIT_OK,
    Commands,
    add_command,
    add_state_dir_option,
    lists_reader,
)


def register(commands: Commands) -> None:
    lists = add_command(commands, "lists", _usage, "the rule lists a schema names")
    actions = lists.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = add_command(actions, "show", _show, "each list: where, format, entries, skipped lines")
    update = add_command(
        actions, "update", _update, "download the URL lists now into STATE_DIR/lists"
    )
    for parser in (show, update):
        parser.add_argument("schema", metavar="SCHEMA", type=Path)
    add_state_dir_option(show)
    show.add_argument(
        "--problems", action="store_true", help="print every skipped line, not the first five"
    )
    update.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        required=True,
        help="the daemon's --state-dir: copies go to DIR/lists, where the daemon reads them "
        "at its next reload",
    )


def _usage(args: argparse.Namespace) -> int:  # argparse requires an action first
    return EXIT_FAILURE


def _show(args: argparse.Namespace) -> int:
    from iptserver.lists.store import load_with_lists

    loaded = load_with_lists(args.schema, lists_reader(args))
    if not loaded.lists:
        print(f"{args.schema}: no rule names a list")
        return EXIT_OK
    for index, rule in enumerate(loaded.schema.rules):
        for position, spec in enumerate(rule.lists):
            read = loaded.lists[spec.location]
            every = spec.refresh_every
            line = loaded.list_lines[(index, position)][0]
            print(f"{spec.location}  (rule {index}, line {line}, exit {rule.exit})")
            print(f"  format: {read.parsed.format.value if read.parsed else spec.format.value}")
            print(f"  refresh: {f'every {every} s' if every else 'on reload'}")
            if read.parsed is None:
                print("  no copy yet (iptserver lists update, or the daemon downloads it)")
                continue
            parsed = read.parsed
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(read.updated_at or 0))
            print(
                f"  copy: {stamp}: {len(parsed.domains)} domains, {len(parsed.networks)} networks"
            )
            if parsed.problems:
                shown = parsed.problems if args.problems else parsed.problems[:5]
                print(f"  skipped lines: {len(parsed.problems)}")
                for problem in shown:
                    print(f"    {problem}")
    return EXIT_OK


def _update(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_download_all(args))


async def _download_all(args: argparse.Namespace) -> int:
    from iptserver.lists.fetch import FetchError, download, refusal, session
    from iptserver.lists.store import ListCache, ListReader
    from iptserver.schema import load_schema

    loaded = load_schema(args.schema)
    cache = ListCache(args.state_dir / "lists")
    reader = ListReader(cache)
    urls = {spec.url: spec for rule in loaded.schema.rules for spec in rule.lists if spec.url}
    failed = 0
    async with session() as client:
        for url, spec in urls.items():
            previous = cache.get(url)
            try:
                copy = await download(client, url, previous)
                if copy is None:
                    cache.touch(url, time.time())
                    print(f"{url}: unchanged")
                    continue
                parsed = reader.parse(spec, copy.data, None)
                if (why := refusal(parsed)) is not None:
                    raise FetchError(f"refused: {why}")
            except FetchError as e:
                print(f"{url}: {e}; the last good copy stays", file=sys.stderr)
                failed += 1
                continue
            cache.put(copy)
            print(
                f"{url}: {len(parsed.domains)} domains, {len(parsed.networks)} networks, "
                f"{len(parsed.problems)} lines skipped"
            )
    if urls:
        print("a running daemon with this --state-dir takes them at its next reload (SIGHUP)")
    return EXIT_FAILURE if failed else EXIT_OK
