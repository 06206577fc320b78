"""The ``iptserver`` command line. The only place that configures logging."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from iptserver import __version__
from iptserver.errors import GeoIPError, SchemaError
from iptserver.geoip import DEFAULT_DATABASE, GeoIPDatabase

log = logging.getLogger("iptserver")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.log_level is None:
        args.log_level = getattr(args, "default_log_level", "warning")
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args))
    except SchemaError as e:
        print(e, file=sys.stderr)
        return 1
    except GeoIPError as e:
        print(f"iptserver: {e}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iptserver", description="DNS-driven policy router for a WireGuard VPN entrypoint"
    )
    parser.add_argument("--version", action="version", version=f"iptserver {__version__}")
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="validate routing schemas (native or MRVPN2)")
    check.add_argument("schemas", nargs="+", metavar="SCHEMA", type=Path)
    check.set_defaults(handler=_check)

    run = sub.add_parser("run", help="run the dataplane and the DNS proxy (root)")
    run.add_argument("--config", required=True, metavar="SCHEMA", type=Path)
    run.add_argument(
        "--geoip",
        metavar="MMDB",
        type=Path,
        help=f"country database (default: {DEFAULT_DATABASE} if present)",
    )
    run.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="ADDR:PORT",
        type=_endpoint,
        help="DNS proxy address (repeatable; overrides dns.listen)",
    )
    run.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="ADDR:PORT",
        type=_endpoint,
        help="recursor (repeatable; overrides dns.upstream)",
    )
    run.add_argument(
        "--api",
        metavar="ADDR:PORT",
        type=_endpoint,
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
        help="remember the exits' marks and tables here, for restarts with --keep-state",
    )
    run.add_argument(
        "--fail-closed",
        action="store_true",
        help="answer SERVFAIL when the kernel cannot be programmed",
    )
    run.set_defaults(handler=_run, default_log_level="info")

    explain = sub.add_parser("explain", help="which exit a name or IP takes, and why")
    explain.add_argument("schema", metavar="SCHEMA", type=Path)
    explain.add_argument(
        "queries", nargs="+", metavar="QUERY", help="NAME, IP, or NAME[,CNAME...]=IP"
    )
    explain.add_argument(
        "--geoip",
        metavar="MMDB",
        type=Path,
        help=f"country database (default: {DEFAULT_DATABASE} if present)",
    )
    explain.add_argument("--json", action="store_true", help="print a JSON list")
    explain.set_defaults(handler=_explain)

    convert = sub.add_parser("convert", help="write a schema (e.g. MRVPN2) in native format")
    convert.add_argument("schema", metavar="SCHEMA", type=Path)
    convert.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    convert.set_defaults(handler=_convert)

    demo = sub.add_parser("demo", help="check and explain the UK/RU/US example")
    demo.set_defaults(handler=_demo)

    json_schema = sub.add_parser("json-schema", help="print the JSON Schema of the format")
    json_schema.set_defaults(handler=_json_schema)

    render = sub.add_parser("render", help="configuration for the programs around iptserver")
    render_sub = render.add_subparsers(dest="render_command", required=True, metavar="ACTION")
    recursor = render_sub.add_parser("recursor", help="PowerDNS Recursor: load the plugin")
    recursor.add_argument(
        "--api",
        metavar="ADDR:PORT",
        type=_endpoint,
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
    recursor.add_argument("--plugin", metavar="LUA", type=Path, help="the plugin's path")
    recursor.add_argument(
        "--out-dir", metavar="DIR", type=Path, help="write the files here (default: print)"
    )
    recursor.set_defaults(handler=_render_recursor)
    frr = render_sub.add_parser("frr", help="FRR configs (OSPF over the tunnels) per node")
    frr.add_argument("schema", metavar="SCHEMA", type=Path)
    frr.add_argument("--node", help="only this node's files")
    frr.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help="write DIR/NODE/frr.conf and daemons (default: print)",
    )
    frr.set_defaults(handler=_render_frr)
    wireguard = render_sub.add_parser("wireguard", help="wg-quick configs for the mesh's nodes")
    wireguard.add_argument("schema", metavar="SCHEMA", type=Path)
    _mesh_render_options(wireguard)
    wireguard.add_argument("--node", help="only this node's configs")
    wireguard.set_defaults(handler=_render_wireguard)
    clients = render_sub.add_parser("clients", help="wg-quick configs and QR codes for clients")
    clients.add_argument("schema", metavar="SCHEMA", type=Path)
    _mesh_render_options(clients)
    clients.add_argument("--client", metavar="NAME", help="only this client's config")
    clients.add_argument(
        "--qr", action="store_true", help="show each config as a QR code (it holds the key)"
    )
    clients.set_defaults(handler=_render_clients)
    routeros = render_sub.add_parser("routeros", help="RouterOS v7 scripts for a MikroTik node")
    routeros.add_argument("schema", metavar="SCHEMA", type=Path)
    _mesh_render_options(routeros)
    routeros.add_argument("--node", required=True, help="the node (mikrotik: true)")
    routeros.set_defaults(handler=_render_routeros)
    compose = render_sub.add_parser(
        "compose", help="docker compose override: iptserver as sidecars of a service"
    )
    compose.add_argument("--compose-file", required=True, metavar="FILE", type=Path)
    compose.add_argument(
        "--service", required=True, metavar="NAME", help="the service whose network to join"
    )
    compose.add_argument(
        "--config", metavar="SCHEMA", type=Path, default=Path("iptserver.yaml"), help="schema"
    )
    compose.add_argument("--state-dir", metavar="DIR", type=Path, default=Path("iptserver-state"))
    compose.add_argument("--frr-dir", metavar="DIR", type=Path, default=Path("frr"))
    compose.add_argument("--geoip", metavar="MMDB", type=Path, help="country database to mount")
    compose.add_argument("--image", default="iptserver:latest", help="the sidecar image")
    compose.add_argument(
        "--dns-listen",
        metavar="ADDR:PORT",
        type=_endpoint,
        default="0.0.0.0:53",
        help="where the recursor answers the clients (default: 0.0.0.0:53)",
    )
    compose.add_argument(
        "--forward",
        action="append",
        default=[],
        metavar="ADDR:PORT",
        type=_endpoint,
        help="the recursor forwards every query here (repeatable; default: it recurses)",
    )
    compose.add_argument(
        "--allow-from",
        action="append",
        default=[],
        metavar="CIDR",
        type=_network,
        help="clients the recursor answers (repeatable; default: the recursor's own)",
    )
    compose.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    compose.set_defaults(handler=_render_compose)

    geoip = sub.add_parser("geoip", help="country database: install, query, build")
    geo_sub = geoip.add_subparsers(dest="geoip_command", required=True, metavar="ACTION")
    update = geo_sub.add_parser("update", help="install or refresh the CC0 country database")
    update.add_argument("--dest", type=Path, default=DEFAULT_DATABASE)
    update.set_defaults(handler=_geoip_update, default_log_level="info")
    lookup = geo_sub.add_parser("lookup", help="country and network of IPs")
    lookup.add_argument("ips", nargs="+", metavar="IP")
    lookup.add_argument("--geoip", metavar="MMDB", type=Path, default=DEFAULT_DATABASE)
    lookup.set_defaults(handler=_geoip_lookup)
    networks = geo_sub.add_parser("networks", help="every network of a country")
    networks.add_argument("country", metavar="CC")
    networks.add_argument("--geoip", metavar="MMDB", type=Path, default=DEFAULT_DATABASE)
    networks.set_defaults(handler=_geoip_networks)
    lab = geo_sub.add_parser("lab", help="write the lab's test database (documentation ranges)")
    lab.add_argument("output", metavar="MMDB", type=Path)
    lab.set_defaults(handler=_geoip_lab)
    return parser


def _endpoint(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    from iptserver.schema.values import parse_endpoint

    try:
        return parse_endpoint(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _run(args: argparse.Namespace) -> int:
    import asyncio

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
    )
    return asyncio.run(Daemon(options).run())


def _check(args: argparse.Namespace) -> int:
    from iptserver.schema import load_schema

    failed = 0
    for path in args.schemas:
        try:
            loaded = load_schema(path)
        except SchemaError as e:
            print(e, file=sys.stderr)
            failed += 1
            continue
        for note in loaded.notes:
            print(f"{note} (note)", file=sys.stderr)
        s = loaded.schema
        print(f"{path}: ok ({loaded.format.value}: {len(s.exits)} exits, {len(s.rules)} rules)")
    return 1 if failed else 0


def _open_geoip(path: Path | None) -> GeoIPDatabase | None:
    if path is not None:
        return GeoIPDatabase(path)
    if DEFAULT_DATABASE.exists():
        return GeoIPDatabase(DEFAULT_DATABASE)
    return None


def _explain(args: argparse.Namespace) -> int:
    from iptserver.explain import explain, format_text, parse_query
    from iptserver.policy import Policy
    from iptserver.schema import load_schema

    loaded = load_schema(args.schema)
    try:
        queries = [parse_query(q) for q in args.queries]
    except ValueError as e:
        print(f"iptserver explain: {e}", file=sys.stderr)
        return 2
    geo = _open_geoip(args.geoip)
    if geo is None and any(rule.countries for rule in loaded.schema.rules):
        print(
            f"iptserver explain: no GeoIP database ({DEFAULT_DATABASE} is missing; "
            "pass --geoip): country rules are not evaluated",
            file=sys.stderr,
        )
    policy = Policy(loaded.schema, geo)
    results = [explain(loaded, policy, q, geo) for q in queries]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n\n".join(format_text(r) for r in results))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from iptserver.schema import load_schema
    from iptserver.schema.dump import to_yaml

    loaded = load_schema(args.schema)
    for note in loaded.notes:
        print(f"{note} (dropped)", file=sys.stderr)
    text = to_yaml(loaded.schema, f"converted from {args.schema} ({loaded.format.value})")
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from iptserver.demo import run

    return run()


def _json_schema(args: argparse.Namespace) -> int:
    from iptserver.schema.jsonschema import json_schema_text

    sys.stdout.write(json_schema_text())
    return 0


def _render_recursor(args: argparse.Namespace) -> int:
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
    )
    files = render_recursor(settings)
    if args.out_dir is None:
        for name, text in files.items():
            print(f"# --- {settings.directory / name} ---\n{text}")
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out_dir / name).write_text(text, encoding="utf-8")
        print(args.out_dir / name)
    return 0


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _render_frr(args: argparse.Namespace) -> int:
    from iptserver.render.frr_command import render_frr_command

    return render_frr_command(args.schema, args.node, args.out)


def _render_compose(args: argparse.Namespace) -> int:
    from iptserver.mesh.topology import mesh_of
    from iptserver.render.compose import (
        ComposeError,
        ComposeSettings,
        exposed_ports,
        read_compose,
        render_override,
    )
    from iptserver.schema import load_schema

    settings = ComposeSettings(
        service=args.service,
        schema=args.config.resolve(),
        state_dir=args.state_dir.resolve(),
        frr_dir=args.frr_dir.resolve(),
        image=args.image,
        geoip=args.geoip.resolve() if args.geoip else None,
        dns_listen=args.dns_listen,
        forward=tuple(args.forward),
        allow_from=tuple(args.allow_from),
    )
    try:
        if args.output is not None and args.output.resolve() == args.compose_file.resolve():
            raise ComposeError(f"{args.output}: the override must not replace the compose file")
        user = read_compose(args.compose_file)
        ports = exposed_ports(mesh_of(load_schema(args.config).schema), args.service)
        text = render_override(user, settings, str(args.compose_file), ports)
    except ComposeError as e:
        print(f"iptserver render compose: {e}", file=sys.stderr)
        return 1
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


def _mesh_render_options(parser: argparse.ArgumentParser) -> None:
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


def _render_wireguard(args: argparse.Namespace) -> int:
    from iptserver.render.mesh_command import render_wireguard_command

    return render_wireguard_command(
        args.schema, args.state_dir, args.node, args.out, args.show_keys
    )


def _render_clients(args: argparse.Namespace) -> int:
    from iptserver.render.mesh_command import render_clients_command

    return render_clients_command(
        args.schema, args.state_dir, args.client, args.out, args.qr, args.show_keys
    )


def _render_routeros(args: argparse.Namespace) -> int:
    from iptserver.render.mesh_command import render_routeros_command

    return render_routeros_command(args.schema, args.state_dir, args.node, args.out, args.show_keys)


def _geoip_update(args: argparse.Namespace) -> int:
    from iptserver.geoip.build import update_production_db

    update_production_db(args.dest)
    return 0


def _geoip_lookup(args: argparse.Namespace) -> int:
    geo = GeoIPDatabase(args.geoip)
    status = 0
    for text in args.ips:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            print(f"{text}: not an IP address", file=sys.stderr)
            status = 2
            continue
        found = geo.describe(ip)
        print(f"{ip} {found[0]} {found[1]}" if found else f"{ip} - (not in {geo.path})")
    return status


def _geoip_networks(args: argparse.Namespace) -> int:
    from iptserver.schema.values import parse_country

    try:
        country = parse_country(args.country)
    except ValueError as e:
        print(f"iptserver geoip networks: {e}", file=sys.stderr)
        return 2
    for network in GeoIPDatabase(args.geoip).networks(country):
        print(network)
    return 0


def _geoip_lab(args: argparse.Namespace) -> int:
    from iptserver.geoip.build import write_country_db
    from iptserver.lab.addresses import LAB_COUNTRIES

    write_country_db(args.output, LAB_COUNTRIES, "iptserver lab (documentation ranges)")
    print(args.output)
    return 0
