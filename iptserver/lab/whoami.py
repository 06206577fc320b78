"""The lab's "whoami" server: tells a TCP client which source address it arrived from.

Tests prove an exit by what the far side sees: each exit (and the entry, for direct
traffic) masquerades with its own uplink address, so the source address this server sees
names the way a connection went (``addresses.SEEN_AS``). It runs in ``internet`` bound to
0.0.0.0 and ::, and the AnyIP local routes there make it answer on every lab address.

Protocol, one line in, JSON out (``{"seen": SOURCE, "local": DESTINATION}``):
- ``whoami`` -> one JSON line, then close;
- ``hold N`` -> one JSON line per second for N seconds (with ``"n": i``), then close;
- an HTTP GET: ``/hold?seconds=N`` streams like ``hold N``; any other path answers the
  JSON once (200, ``Connection: close``).
A held connection lets a test prove that an established connection keeps its exit.

Run as ``python -m iptserver.lab.whoami --port 80 --port 8080``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("iptserver.lab.whoami")

READ_TIMEOUT = 10.0  # seconds a client has to send its request line and headers
MAX_HOLD = 3600


def _line(seen: str, local: str, n: int | None = None) -> bytes:
    body: dict[str, object] = {"seen": seen, "local": local}
    if n is not None:
        body["n"] = n
    return json.dumps(body).encode() + b"\n"


async def _hold(writer: asyncio.StreamWriter, seen: str, local: str, seconds: int) -> None:
    for n in range(max(0, min(seconds, MAX_HOLD))):
        if n:
            await asyncio.sleep(1)
        writer.write(_line(seen, local, n))
        await writer.drain()


async def _http(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str, seen: str, local: str
) -> None:
    while (await asyncio.wait_for(reader.readline(), READ_TIMEOUT)).strip():
        pass  # headers: nothing in them matters here
    url = urlsplit(target)
    if url.path == "/hold":
        seconds = int(parse_qs(url.query).get("seconds", ["10"])[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n")
        writer.write(b"Connection: close\r\n\r\n")
        await _hold(writer, seen, local, seconds)
        return
    body = _line(seen, local)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    writer.write(f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    seen = str(writer.get_extra_info("peername")[0])
    local = str(writer.get_extra_info("sockname")[0])
    try:
        words = (await asyncio.wait_for(reader.readline(), READ_TIMEOUT)).decode().split()
        log.info("%s -> %s: %s", seen, local, " ".join(words[:2]))
        if len(words) >= 2 and words[0] == "GET":
            await _http(reader, writer, words[1], seen, local)
        elif len(words) == 2 and words[0] == "hold":
            await _hold(writer, seen, local, int(words[1]))
        else:  # "whoami", or anything else: answer rather than leave a test guessing
            writer.write(_line(seen, local))
        await writer.drain()
    except (TimeoutError, ConnectionError, ValueError, UnicodeDecodeError) as exc:
        log.info("%s -> %s: %s", seen, local, exc or type(exc).__name__)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve(ports: list[int], ready_file: Path | None) -> None:
    # asyncio sets IPV6_V6ONLY on the :: socket, so 0.0.0.0 and :: can share each port.
    servers = [await asyncio.start_server(_serve, ["0.0.0.0", "::"], port) for port in ports]
    log.info("whoami on 0.0.0.0 and :: ports %s", ports)
    if ready_file is not None:
        ready_file.write_text("ready\n")
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, action="append", help="default: 80 and 8080")
    parser.add_argument("--ready-file", type=Path, help="written once every socket is bound")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port or [80, 8080], args.ready_file))


if __name__ == "__main__":
    main()
