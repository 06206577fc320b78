"""Commands on a schema file: ``check``, ``convert``, ``json-schema``, ``explain``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from iptserver.cli.command import (
    EXIT_FAILURE,
    EXIT_OK,
    Commands,
    add_command,
    add_geoip_option,
    add_state_dir_option,
    address,
    lists_reader,
)
from iptserver.cli.output import write_or_print
from iptserver.errors import SchemaError, UsageError
from iptserver.geoip import DEFAULT_DATABASE, open_geoip


def register(commands: Commands) -> None:
    check = add_command(commands, "check", _check, "validate routing schemas (native or MRVPN2)")
    check.add_argument("schemas", nargs="+", metavar="SCHEMA", type=Path)
    add_state_dir_option(check)

    convert = add_command(
        commands, "convert", _convert, "write a schema (e.g. MRVPN2) in native format"
    )
    convert.add_argument("schema", metavar="SCHEMA", type=Path)
    convert.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")

    add_command(commands, "json-schema", _json_schema, "print the JSON Schema of the format")

    explain = add_command(commands, "explain", _explain, "which exit a name or IP takes, and why")
    explain.add_argument("schema", metavar="SCHEMA", type=Path)
    explain.add_argument(
        "queries", nargs="+", metavar="QUERY", help="NAME, IP, or NAME[,CNAME...]=IP"
    )
    add_geoip_option(explain)
    add_state_dir_option(explain)
    explain.add_argument(
        "--from",
        dest="client",
        metavar="ADDR",
        type=address,
        help="the asking client's address: rules with sources apply to some clients only",
    )
    explain.add_argument("--json", action="store_true", help="print a JSON list")


def _check(args: argparse.Namespace) -> int:
    """Every file is checked, with its local lists; each bad one is reported,
    file:line:column first. A downloaded list is checked in its last copy (--state-dir)."""
    from iptserver.lists.store import load_with_lists

    failed = 0
    reader = lists_reader(args)
    for path in args.schemas:
        try:
            loaded = load_with_lists(path, reader)
        except SchemaError as e:  # a finding of the check, not the command's failure
            print(e, file=sys.stderr)
            failed += 1
            continue
        for note in loaded.notes:
            print(f"{note} (note)", file=sys.stderr)
        bad_lines = 0
        for read in loaded.lists.values():
            if read.parsed is None:
                print(f"{read.spec.location}: not checked: no copy downloaded yet", file=sys.stderr)
                continue
            for problem in read.parsed.problems:
                print(problem if read.spec.file else f"{problem} (note)", file=sys.stderr)
            bad_lines += len(read.parsed.problems) if read.spec.file else 0
        if bad_lines:
            failed += 1
            continue
        s = loaded.schema
        entries = sum(read.entries for read in loaded.lists.values())
        listed = f", {len(loaded.lists)} lists of {entries} entries" if loaded.lists else ""
        print(
            f"{path}: ok ({loaded.format.value}: {len(s.exits)} exits, {len(s.rules)} rules"
            f"{listed})"
        )
    return EXIT_FAILURE if failed else EXIT_OK


def _convert(args: argparse.Namespace) -> int:
    from iptserver.schema import load_schema
    from iptserver.schema.dump import to_yaml

    loaded = load_schema(args.schema)
    for note in loaded.notes:
        print(f"{note} (dropped)", file=sys.stderr)
    text = to_yaml(loaded.schema, f"converted from {args.schema} ({loaded.format.value})")
    write_or_print(text, args.output)
    return EXIT_OK


def _json_schema(args: argparse.Namespace) -> int:
    from iptserver.schema.jsonschema import json_schema_text

    sys.stdout.write(json_schema_text())
    return EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    from iptserver.lists.store import load_with_lists
    from iptserver.policy import Policy
    from iptserver.policy.explain import explain, format_text, parse_query

    loaded = load_with_lists(args.schema, lists_reader(args))
    try:
        queries = [parse_query(q) for q in args.queries]
    except ValueError as e:
        raise UsageError(str(e)) from e
    geo = open_geoip(args.geoip)
    if geo is None and any(rule.countries for rule in loaded.schema.rules):
        print(
            f"iptserver explain: no GeoIP database ({DEFAULT_DATABASE} is missing; "
            "pass --geoip): country rules are not evaluated",
            file=sys.stderr,
        )
    policy = Policy(loaded.schema, geo)
    results = [explain(loaded, policy, q, geo, args.client) for q in queries]
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        print("\n\n".join(format_text(r) for r in results))
    return EXIT_OK
