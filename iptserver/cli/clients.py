"""``iptserver clients add|rm|ls``: the running daemon's clients, through its API.

The daemon owns the WireGuard interface and the roster, so these commands only ask it
(``--api`` as given to ``iptserver run``, and the token file).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from iptserver.cli.command import EXIT_FAILURE, EXIT_OK, Commands, add_command, endpoint
from iptserver.errors import IptserverError
from iptserver.schema.values import format_endpoint


def register(commands: Commands) -> None:
    clients = add_command(commands, "clients", _usage, "the running daemon's VPN clients")
    actions = clients.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = add_command(actions, "add", _add, "add a client: its config on stdout (or --out)")
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--public-key", metavar="KEY", help="the client's own key (default: one is made)"
    )
    add.add_argument("--out", metavar="FILE", type=Path, help="write the config here (0600)")
    add.add_argument("--qr", metavar="PNG", type=Path, help="write the config's QR code here")
    remove = add_command(actions, "rm", _remove, "remove a client: it cannot connect any more")
    remove.add_argument("name", metavar="NAME")
    listing = add_command(actions, "ls", _list, "the clients, last handshake and traffic")
    for parser in (add, remove, listing):
        parser.add_argument(
            "--api",
            required=True,
            type=endpoint,
            metavar="ADDR:PORT",
            help="the daemon's API (iptserver run --api)",
        )
        parser.add_argument(
            "--api-token-file",
            required=True,
            type=Path,
            metavar="FILE",
            help="the token file the daemon was given",
        )


def _usage(args: argparse.Namespace) -> int:  # argparse requires an action first
    return EXIT_FAILURE


def _add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name}
    if args.public_key is not None:
        body["public_key"] = args.public_key
    added = _call(args, "POST", "/v1/clients", body)
    if args.out is not None:
        _write_private(args.out, added["config"].encode())
        print(f"{added['name']}: {added['address']}, config in {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(added["config"])
    if args.qr is not None:
        if added["qr_png"] is None:
            print("no QR code: the client keeps its own private key", file=sys.stderr)
        else:
            _write_private(args.qr, base64.b64decode(added["qr_png"]))
    return EXIT_OK


def _remove(args: argparse.Namespace) -> int:
    _call(args, "DELETE", f"/v1/clients/{args.name}")
    print(f"{args.name}: removed", file=sys.stderr)
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    now = time.time()
    for client in _call(args, "GET", "/v1/clients"):
        handshake = client["latest_handshake"]
        seen = f"{now - handshake:.0f} s ago" if handshake else "never"
        print(
            f"{client['name']:20} {client['address']:18} {client['source']:6} "
            f"handshake {seen}, received {client['rx_bytes']} B, sent {client['tx_bytes']} B"
        )
    return EXIT_OK


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    try:
        token = args.api_token_file.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise IptserverError(f"cannot read the API token: {e}") from e
    url = f"http://{format_endpoint(args.api)}{path}"
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        try:
            why = json.load(e)["error"]
        except (ValueError, KeyError, TypeError):
            why = e.reason
        raise IptserverError(f"{method} {path}: {e.code} {why}") from e
    except (urllib.error.URLError, OSError) as e:
        raise IptserverError(f"cannot reach the API at {url}: {e}") from e


def _write_private(path: Path, data: bytes) -> None:
    """A file only its owner reads: the config carries a private key."""
    try:
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_bytes(data)
    except OSError as e:
        raise IptserverError(f"cannot write {path}: {e}") from e
