"""``iptserver geoip update|lookup|networks|lab``: the country database."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from iptserver.cli.command import EXIT_OK, EXIT_USAGE, Commands, add_command
from iptserver.errors import UsageError
from iptserver.geoip import DEFAULT_DATABASE, GeoIPDatabase


def register(commands: Commands) -> None:
    geoip = commands.add_parser("geoip", help="country database: install, query, build")
    actions = geoip.add_subparsers(dest="geoip_command", required=True, metavar="ACTION")
    update = add_command(actions, "update", _update, "install or refresh the CC0 country database")
    update.add_argument("--dest", type=Path, default=DEFAULT_DATABASE)
    lookup = add_command(actions, "lookup", _lookup, "country and network of IPs")
    lookup.add_argument("ips", nargs="+", metavar="IP")
    lookup.add_argument("--geoip", metavar="MMDB", type=Path, default=DEFAULT_DATABASE)
    networks = add_command(actions, "networks", _networks, "every network of a country")
    networks.add_argument("country", metavar="CC")
    networks.add_argument("--geoip", metavar="MMDB", type=Path, default=DEFAULT_DATABASE)
    lab = add_command(actions, "lab", _lab, "write the lab's test database (documentation ranges)")
    lab.add_argument("output", metavar="MMDB", type=Path)


def _update(args: argparse.Namespace) -> int:
    from iptserver.geoip.build import update_production_db

    update_production_db(args.dest)
    return EXIT_OK


def _lookup(args: argparse.Namespace) -> int:
    """Every IP is looked up; one that is not an IP makes the status 2 (usage)."""
    geo = GeoIPDatabase(args.geoip)
    status = EXIT_OK
    for text in args.ips:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            print(f"{text}: not an IP address", file=sys.stderr)
            status = EXIT_USAGE
            continue
        found = geo.describe(ip)
        print(f"{ip} {found[0]} {found[1]}" if found else f"{ip} - (not in {geo.path})")
    return status


def _networks(args: argparse.Namespace) -> int:
    from iptserver.schema.values import parse_country

    try:
        country = parse_country(args.country)
    except ValueError as e:
        raise UsageError(str(e)) from e
    for network in GeoIPDatabase(args.geoip).networks(country):
        print(network)
    return EXIT_OK


def _lab(args: argparse.Namespace) -> int:
    from iptserver.geoip.build import write_country_db
    from iptserver.lab.addresses import LAB_COUNTRIES

    write_country_db(args.output, LAB_COUNTRIES, "iptserver lab (documentation ranges)")
    print(args.output)
    return EXIT_OK
