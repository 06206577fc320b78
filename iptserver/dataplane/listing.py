"""The learned sets listed by a child process, streamed back in sorted batches.

A full learned set is 1,000,000 entries: listing it in the daemon, even on a socket and
thread of its own, holds the interpreter lock for seconds (answers wait) and makes
hundreds of MB of objects that stay in the heap. The child (``python -m
iptserver.dataplane.listing``) dumps, filters and sorts the sets, and writes one line per
entry; the daemon reads them a batch at a time and holds no more than one batch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import sys
from collections.abc import AsyncIterator, Collection, Sequence
from typing import TYPE_CHECKING, NamedTuple

from iptserver.dataplane.ipset_netlink import Entry, RawEntry, SetWire
from iptserver.errors import DataplaneError

if TYPE_CHECKING:  # the child imports as little as it can: it starts for every listing
    from iptserver.dataplane.plan import KernelPlan
    from iptserver.schema.values import IPAddress

BATCH = 100


class RouteLine(NamedTuple):
    """A learned entry as /v1/routes shows it, but for what the daemon alone knows (the
    answer that wrote it): ``json`` is its JSON object up to, not including, those."""

    set_name: str
    version: int
    address: int
    json: bytes


def route_json(weight: int, network: str, exit_name: str | None, timeout: int | None) -> str:
    """The start of a learned entry's /v1/routes object (``RouteLine.json``)."""
    return (
        f'{{"kind": "learned", "net": "{network}", '
        f'"exit": {json.dumps(exit_name)}, "weight": {weight}, '
        f'"expires_in": {json.dumps(timeout)}, '
    )


class Learned(NamedTuple):
    """A learned entry as listed, with its set and the set's weight."""

    weight: int
    set_name: str
    entry: Entry


def learned_sets(plan: KernelPlan) -> list[tuple[int, str]]:
    """(weight, set name) of every learned set, highest weight first, IPv4 first."""
    found = [
        (weight_class.weight, set_plan.family, set_plan.name)
        for weight_class in plan.all_classes
        for set_plan in weight_class.learned
    ]
    found.sort(key=lambda item: (-item[0], item[1], item[2]))
    return [(weight, name) for weight, _, name in found]


async def stream_routes(
    plan: KernelPlan,
    *,
    ip: IPAddress | None = None,
    marks: Collection[int] | None = None,
    batch: int = BATCH,
) -> AsyncIterator[list[RouteLine]]:
    """``stream_learned``'s entries, formatted by the child for /v1/routes: a million
    of them cost the daemon a split and a dict lookup each."""
    exits = ",".join(f"{e.mark}={e.name}" for e in plan.exits)
    pending: list[RouteLine] = []
    async for line in _lines(plan, ip, marks, None, ["--json", exits]):
        name, version, address, text = line.split(b" ", 3)
        pending.append(RouteLine(name.decode(), int(version), int(address), text.rstrip(b"\n")))
        if len(pending) >= batch:
            yield pending
            pending = []
    if pending:
        yield pending


async def stream_learned(
    plan: KernelPlan,
    *,
    ip: IPAddress | None = None,
    marks: Collection[int] | None = None,
    except_marks: Collection[int] | None = None,
    batch: int = BATCH,
) -> AsyncIterator[list[Learned]]:
    """The learned entries in ``learned_sets`` order, each set by address; ``ip`` keeps
    those covering it, ``marks`` those of these marks, ``except_marks`` the others.

    Raises DataplaneError when the child cannot read the kernel."""
    pending: list[Learned] = []
    async for line in _lines(plan, ip, marks, except_marks, []):
        pending.append(_parse(line))
        if len(pending) >= batch:
            yield pending
            pending = []
    if pending:
        yield pending


async def _lines(
    plan: KernelPlan,
    ip: IPAddress | None,
    marks: Collection[int] | None,
    except_marks: Collection[int] | None,
    more: list[str],
) -> AsyncIterator[bytes]:
    """The child's lines; raises DataplaneError when it cannot read the kernel."""
    argv = [f"{weight}:{name}" for weight, name in learned_sets(plan)]
    if ip is not None:
        argv += ["--ip", str(ip)]
    if marks is not None:
        argv += ["--marks", ",".join(str(m) for m in sorted(marks))]
    if except_marks is not None:
        argv += ["--except-marks", ",".join(str(m) for m in sorted(except_marks))]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "iptserver.dataplane.listing",
        *argv,
        *more,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        async for line in child.stdout:
            yield line
        stderr = await child.stderr.read()
        if await child.wait() != 0:
            why = stderr.decode(errors="replace").strip().splitlines()
            raise DataplaneError(why[-1] if why else f"listing exited with {child.returncode}")
    finally:
        if child.returncode is None:  # the reader went away half-way
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()


def _parse(line: bytes) -> Learned:
    weight, name, version, address, cidr, mark, timeout = line.split()
    kind = ipaddress.IPv4Network if version == b"4" else ipaddress.IPv6Network
    return Learned(
        int(weight),
        name.decode(),
        Entry(
            kind((int(address), int(cidr))),
            int(mark) if mark != b"-" else None,
            int(timeout) if timeout != b"-" else None,
        ),
    )


def _write(
    sets: Sequence[tuple[int, str]],
    ip: IPAddress | None,
    marks: Collection[int] | None,
    except_marks: Collection[int],
    exits: dict[int, str] | None,
) -> None:
    kernel = SetWire()
    try:
        out = sys.stdout
        for weight, name in sets:
            found: list[RawEntry] = [
                raw
                for raw in kernel.scan(name)
                if (marks is None or raw[2] in marks)
                and raw[2] not in except_marks
                and (ip is None or _covers(raw, ip))
            ]
            found.sort(key=lambda raw: (raw[0], raw[1]))
            for address, cidr, mark, timeout in found:
                version = 4 if len(address) == 4 else 6
                number = int.from_bytes(address, "big")
                if exits is not None:
                    network = f"{ipaddress.ip_address(address)}/{cidr}"
                    exit_name = exits.get(mark) if mark is not None else None
                    text = route_json(weight, network, exit_name, timeout)
                    out.write(f"{name} {version} {number} {text}\n")
                else:
                    out.write(
                        f"{weight} {name} {version} {number} {cidr} "
                        f"{'-' if mark is None else mark} {'-' if timeout is None else timeout}\n"
                    )
    finally:
        kernel.close()


def _covers(raw: RawEntry, ip: IPAddress) -> bool:
    address, cidr, _, _ = raw
    if len(address) * 8 != ip.max_prefixlen:
        return False
    shift = ip.max_prefixlen - cidr
    return int.from_bytes(address, "big") >> shift == int(ip) >> shift


def _marks(text: str) -> set[int]:
    return {int(m) for m in text.split(",") if m}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iptserver.dataplane.listing")
    parser.add_argument("sets", nargs="*", metavar="WEIGHT:SET")
    parser.add_argument("--ip", type=ipaddress.ip_address)
    parser.add_argument("--marks", help="comma-separated")
    parser.add_argument("--except-marks", default="", help="comma-separated")
    parser.add_argument("--json", metavar="MARK=EXIT,...", help="lines for /v1/routes")
    args = parser.parse_args(argv)
    os.nice(10)  # background work: the daemon's answers come first
    sets = [(int(w), name) for w, name in (item.split(":", 1) for item in args.sets)]
    marks = _marks(args.marks) if args.marks is not None else None
    try:
        exits = None
        if args.json is not None:
            pairs = (item.split("=", 1) for item in args.json.split(",") if item)
            exits = {int(mark): name for mark, name in pairs}
        _write(sets, args.ip, marks, _marks(args.except_marks), exits)
    except DataplaneError as e:
        print(e, file=sys.stderr)
        return 1
    except BrokenPipeError:  # the daemon stopped reading
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
