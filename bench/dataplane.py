"""Benchmark of the kernel dataplane's set programming, measured side by side in one run.

* Bulk load: a whole-country-sized list of prefixes into a ``hash:net`` set with marks,
  through ``IPSets.add`` (one netlink message per 1,000 entries, encoded with ``struct``)
  against pyroute2's ``IPSet.add`` (one netlink round trip and one generic encoding per
  entry), the latter on a sample.
* Learning: DNS-learned host entries for answers arriving together, through the learner's
  ``Batcher`` (answers that arrive while the kernel is busy share one round trip) against
  one ``Dataplane.learn`` per answer.

It runs as root inside a network namespace of its own (created and removed here), so the
machine's own sets are never touched. Only the ratios mean much on a shared machine.

Run: ``python bench/dataplane.py [--prefixes N] [--sample N] [--answers N]``
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence

NS_PREFIX = "iptsbench"


def _prefixes(count: int) -> list[ipaddress.IPv4Network]:
    # Distinct /24s from 11.0.0.0 up: public-looking, never overlapping.
    return [ipaddress.ip_network((0x0B000000 + (i << 8), 24)) for i in range(count)]


def bulk_load(prefixes: int, sample: int) -> tuple[float, float]:
    from pyroute2 import IPSet

    from iptserver.dataplane.ipset import Entry, IPSets

    sets = IPSets()
    nets = _prefixes(prefixes)
    sets.create("bench-batched", 4, timeout=False, skbinfo=True)
    started = time.perf_counter()
    sets.add("bench-batched", [Entry(net, 0x101) for net in nets])
    batched = prefixes / (time.perf_counter() - started)

    one_by_one = IPSet()
    sets.create("bench-single", 4, timeout=False, skbinfo=True)
    started = time.perf_counter()
    for net in nets[:sample]:
        one_by_one.add(
            "bench-single", str(net), etype="net", skbmark=(0x101, 0xFFFFFFFF), exclusive=False
        )
    single = sample / (time.perf_counter() - started)
    one_by_one.close()
    sets.destroy("bench-batched")
    sets.destroy("bench-single")
    sets.close()
    return batched, single


async def _learn(answers: int, batched: bool) -> float:
    from concurrent.futures import ThreadPoolExecutor

    from iptserver.dataplane.ipset import Entry, IPSets
    from iptserver.dataplane.plan import LearnedEntry
    from iptserver.learning.batching import Batcher

    executor = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    sets = await loop.run_in_executor(executor, IPSets)
    name = "bench-learned"
    await loop.run_in_executor(executor, lambda: sets.create(name, 4, timeout=True, skbinfo=True))

    def apply(entries: Sequence[LearnedEntry]) -> None:
        sets.add(name, [Entry(e.network, e.mark, e.timeout) for e in entries])

    async def submit(entries: list[LearnedEntry]) -> None:
        await loop.run_in_executor(executor, apply, entries)

    batcher = Batcher(submit)
    hosts = [
        LearnedEntry(name, ipaddress.ip_network((0x0C000000 + i, 32)), 0x101, 300)
        for i in range(answers)
    ]
    started = time.perf_counter()
    if batched:
        await asyncio.gather(*(batcher.submit([host]) for host in hosts))
    else:
        for host in hosts:
            await submit([host])
    rate = answers / (time.perf_counter() - started)
    await loop.run_in_executor(executor, sets.destroy, name)
    await loop.run_in_executor(executor, sets.close)
    executor.shutdown()
    return rate


def inside(args: argparse.Namespace) -> int:
    batched, single = bulk_load(args.prefixes, args.sample)
    print(f"bulk load of {args.prefixes:,} prefixes into a hash:net set with marks")
    print(
        f"  batched netlink (IPSets.add)   {batched:12,.0f} entries/s "
        f"({args.prefixes / batched:.2f} s for all)"
    )
    print(
        f"  one call per entry (pyroute2)  {single:12,.0f} entries/s "
        f"({args.sample:,} sampled; {args.prefixes / single:.1f} s for all)"
    )
    print(f"  ratio                          {batched / single:12,.1f}x")
    together = asyncio.run(_learn(args.answers, batched=True))
    alone = asyncio.run(_learn(args.answers, batched=False))
    print(f"\nlearning {args.answers:,} answers that arrive together (one host entry each)")
    print(f"  batched (Batcher)              {together:12,.0f} answers/s")
    print(f"  one kernel call per answer     {alone:12,.0f} answers/s")
    print(f"  ratio                          {together / alone:12,.1f}x")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefixes", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=3_000)
    parser.add_argument("--answers", type=int, default=5_000)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        return inside(args)
    if os.geteuid() != 0:
        print("bench/dataplane.py programs ipsets in a namespace of its own: run it as root")
        return 2
    namespace = f"{NS_PREFIX}{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        return subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                namespace,
                sys.executable,
                __file__,
                "--inside",
                "--prefixes",
                str(args.prefixes),
                "--sample",
                str(args.sample),
                "--answers",
                str(args.answers),
            ],
            check=False,
        ).returncode
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=True)


if __name__ == "__main__":
    raise SystemExit(main())
