"""A DNS fuzzer for the proxy, from outside: random datagrams, real queries damaged in
the ways parsers trip on, and real queries, with a check of every reply.

What a reply must be, whatever it answers: a DNS message (a header with QR set) whose
ID was sent; and when the proxy wrote it itself (FORMERR, REFUSED, NOTIMP, SERVFAIL
without records: a forwarded reply is the upstream's), no larger than the largest query
sent with that ID (no amplification). Labels are not checked: DNS allows any byte in
them, and the proxy echoes a damaged question as it came. Between the noise, a control query
for a known name must keep getting its known address. Used by the e2e suite (a bounded
run) and ``bench/fuzz.py`` (a million datagrams).
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from dnslib import QTYPE, DNSRecord

OWN_RCODES = frozenset({1, 2, 4, 5})  # FORMERR, SERVFAIL, NOTIMP, REFUSED
_MUTATIONS = ("flip", "cut", "grow", "header", "pointer", "type", "random")


@dataclass
class FuzzResult:
    sent: int = 0
    replies: int = 0
    not_dns: int = 0  # replies that do not parse, or have QR clear
    unknown_id: int = 0  # replies to an ID never sent
    amplified: int = 0  # the proxy's own replies larger than the query
    controls: int = 0  # control queries asked
    controls_wrong: list[str] = field(default_factory=list)  # what went wrong with them
    rcodes: dict[int, int] = field(default_factory=dict)
    samples: list[tuple[bytes, str]] = field(default_factory=list)  # bad replies, and why

    @property
    def problems(self) -> list[str]:
        found = []
        if self.not_dns:
            found.append(f"{self.not_dns} replies that are no DNS reply")
        if self.unknown_id:
            found.append(f"{self.unknown_id} replies to IDs never sent")
        if self.amplified:
            found.append(f"{self.amplified} own replies larger than their query")
        found += self.controls_wrong[:5]
        return found


def datagram(rng: random.Random, names: list[str]) -> bytes:
    """One fuzz datagram: a query for one of ``names``, damaged one way or another (one
    in eight is sent whole)."""
    query = DNSRecord.question(rng.choice(names), rng.choice(("A", "AAAA", "HTTPS", "TXT")))
    query.header.id = rng.randrange(1 << 16)
    wire = bytearray(query.pack())
    if rng.random() < 0.125:
        return bytes(wire)
    kind = rng.choice(_MUTATIONS)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            wire[rng.randrange(len(wire))] ^= 1 << rng.randrange(8)
    elif kind == "cut":
        del wire[rng.randrange(len(wire)) :]
    elif kind == "grow":
        wire += rng.randbytes(rng.randint(1, 1500))
    elif kind == "header":  # flags, counts: anything
        wire[2:12] = rng.randbytes(10)
    elif kind == "pointer":  # a compression pointer somewhere in the name, maybe to itself
        at = rng.randrange(12, len(wire) - 1)
        wire[at : at + 2] = struct.pack("!H", 0xC000 | rng.randrange(0, len(wire) + 4))
    elif kind == "type":
        wire[-4:] = rng.randbytes(4)
    else:
        wire = bytearray(wire[:2] + rng.randbytes(rng.randint(0, 1200)))
    return bytes(wire)


def fuzz(
    make: Callable[[int, int], socket.socket],
    server: tuple[str, int],
    count: int,
    names: list[str],
    control: tuple[str, str],
    *,
    rate: float = 5000.0,
    control_every: int = 1000,
    seed: int = 1,
) -> FuzzResult:
    """Send ``count`` datagrams to ``server`` at ``rate`` a second from one socket made
    by ``make`` (family, kind), checking every reply; every ``control_every`` datagrams a
    control query (``control``: a name and the address it must get) from a socket of
    its own. Replies still in flight 2 s after the last datagram are counted too."""
    rng = random.Random(seed)
    result = FuzzResult()
    longest = array("H", bytes(2 * 65536))  # per ID, the longest query sent with it
    done = threading.Event()
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with make(family, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        reader = threading.Thread(target=_read, args=(sock, longest, result, done), daemon=True)
        reader.start()
        started = time.monotonic()
        for i in range(count):
            wire = datagram(rng, names)
            if len(wire) >= 2:
                query_id = struct.unpack_from("!H", wire)[0]
                longest[query_id] = max(longest[query_id], len(wire))
            with contextlib.suppress(OSError):  # a full send buffer: the kernel's limit
                sock.sendto(wire, server)
            result.sent += 1
            if (i + 1) % control_every == 0:
                _control(make, family, server, control, result)
                ahead = result.sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        time.sleep(2.0)
        done.set()
        sock.close()
        reader.join(timeout=5)
    _control(make, family, server, control, result)
    return result


def _read(
    sock: socket.socket, longest: array[int], result: FuzzResult, done: threading.Event
) -> None:
    sock.settimeout(0.2)
    while not done.is_set():
        try:
            data = sock.recv(65535)
        except TimeoutError:
            continue
        except OSError:
            return
        result.replies += 1
        if len(data) < 12 or not data[2] & 0x80:  # no header, or QR clear
            result.not_dns += 1
            result.samples.append((data, "not a DNS reply"))
            continue
        query_id, flags, _, answers, authority = struct.unpack_from("!HHHHH", data)
        sent = longest[query_id]
        if not sent:
            result.unknown_id += 1
        rcode = flags & 0xF
        result.rcodes[rcode] = result.rcodes.get(rcode, 0) + 1
        # The proxy's own replies carry no records (a forwarded one is the upstream's).
        own = rcode in OWN_RCODES and not answers and not authority
        if own and len(data) > max(sent, 12):
            result.amplified += 1
            result.samples.append((data, f"{len(data)} bytes for a query of {sent}"))


def _control(
    make: Callable[[int, int], socket.socket],
    family: int,
    server: tuple[str, int],
    control: tuple[str, str],
    result: FuzzResult,
) -> None:
    """One control query, asked again as a stub resolver would (the noise may fill the
    proxy's receive buffer), until it is answered or 5 s pass."""
    name, address = control
    result.controls += 1
    query = DNSRecord.question(name, "A")
    deadline = time.monotonic() + 5
    with make(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        while time.monotonic() < deadline:
            sock.sendto(query.pack(), server)
            try:
                reply = DNSRecord.parse(sock.recv(65535))
            except TimeoutError:
                continue
            found = [str(r.rdata) for r in reply.rr if r.rtype == QTYPE.A]
            if found != [address]:
                result.controls_wrong.append(f"control {name}: got {found}, not {address}")
            return
    result.controls_wrong.append(f"control {name}: no answer within 5 s")


def main(argv: list[str] | None = None) -> int:
    """``python -m iptserver.lab.fuzz ADDR PORT COUNT NAME=ADDRESS [--rate R]``: a run from
    this namespace, its result as one JSON line (bench/fuzz.py runs it in its own)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description="fuzz a DNS proxy over UDP")
    parser.add_argument("address")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("control", help="NAME=ADDRESS the proxy must keep answering")
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--names", type=int, default=1000, help="n0.bench.test ... names")
    args = parser.parse_args(argv)
    name, _, address = args.control.partition("=")
    names = [f"n{i}.bench.test" for i in range(args.names)]
    started = time.monotonic()
    result = fuzz(
        socket.socket, (args.address, args.port), args.count, names, (name, address),
        rate=args.rate, control_every=10_000,
    )  # fmt: skip
    summary = {
        "seconds": round(time.monotonic() - started, 1),
        "sent": result.sent,
        "replies": result.replies,
        "rcodes": result.rcodes,
        "controls": result.controls,
        "problems": result.problems,
        "samples": [(why, data.hex()) for data, why in result.samples[:5]],
    }
    print(json.dumps(summary))
    return 1 if result.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
