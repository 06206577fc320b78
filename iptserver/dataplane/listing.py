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
import sys
from collections.abc import AsyncIterator, Collection, Sequence
from typing import NamedTuple

from iptserver.dataplane.ipset import Entry, IPSets, RawEntry
from iptserver.dataplane.plan import KernelPlan
from iptserver.errors import DataplaneError
from iptserver.schema.values import IPAddress

BATCH = 500


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
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        pending: list[Learned] = []
        async for line in child.stdout:
            pending.append(_parse(line))
            if len(pending) >= batch:
                yield pending
                pending = []
        stderr = await child.stderr.read()
        if await child.wait() != 0:
            why = stderr.decode(errors="replace").strip().splitlines()
            raise DataplaneError(why[-1] if why else f"listing exited with {child.returncode}")
        if pending:
            yield pending
    finally:
        if child.returncode is None:  # the reader went away half-way
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()


def _parse(line: bytes) -> Learned:
    weight, name, network, mark, timeout = line.split()
    return Learned(
        int(weight),
        name.decode(),
        Entry(
            ipaddress.ip_network(network.decode()),
            int(mark) if mark != b"-" else None,
            int(timeout) if timeout != b"-" else None,
        ),
    )


def _write(
    sets: Sequence[tuple[int, str]],
    ip: IPAddress | None,
    marks: Collection[int] | None,
    except_marks: Collection[int],
) -> None:
    kernel = IPSets()
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
                text = ipaddress.ip_address(address)
                out.write(
                    f"{weight} {name} {text}/{cidr} {'-' if mark is None else mark} "
                    f"{'-' if timeout is None else timeout}\n"
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
    args = parser.parse_args(argv)
    sets = [(int(w), name) for w, name in (item.split(":", 1) for item in args.sets)]
    marks = _marks(args.marks) if args.marks is not None else None
    try:
        _write(sets, args.ip, marks, _marks(args.except_marks))
    except DataplaneError as e:
        print(e, file=sys.stderr)
        return 1
    except BrokenPipeError:  # the daemon stopped reading
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
