"""Hostile load, measured from outside: a flooding client beside a quiet one, and the
memory of a daemon that has answered 100,000 and 1,000,000 unique names.

    python bench/hostile.py [--seconds 5] [--names 100000,1000000] [--quick]

One network namespace (bench/dnsbench.py: a dnsmasq upstream, ``dnsmasq --ipset`` with
its cache off, ``iptserver run``). Two clients on loopback, in different /24s: the
flooder (127.1.0.10) sends unique names at a fixed rate with many queries in flight;
the quiet client (127.2.0.20) asks 1,000 names over and over at 200 q/s. For each path
the quiet client's p50/p99 alone and during the flood, and what became of the flood
(answered, dropped), and the daemon's RSS before and after:

* ``iptserver``: the schema's default ``dns.rate_limit`` (500 q/s a client, 2000 a /24;
  past twice that the kernel drops the datagrams, counted as "kernel dropped");
* ``iptserver, no limit``: ``dns.rate_limit`` off, to show what the limit buys;
* ``dnsmasq``: ``dnsmasq --ipset``, which has no per-client limit.

Floods: 5x the default client limit (2,500 q/s), and 20,000 q/s (about 5x what the
proxy can answer here). Then memory: a fresh iptserver (no rate limit) answers each of
``--names`` unique names once; its RSS and learned set size after. Nothing fails the
run but a path that stops answering the quiet client altogether (exit status 1).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dnsbench import DNSMASQ, IPTSERVER, NO_RATE_LIMIT, Bench, field_of, rss_mb

FLOODER, QUIET = "127.1.0.10", "127.2.0.20"
DEFAULT_LIMIT = "{client: 500, network: 2000, burst: 2}"
QUIET_QPS = 200
FLOODS = (2500, 20000)
PATHS = ("iptserver", "iptserver, no limit", "dnsmasq")


@dataclass
class Flooded:
    quiet: tuple[float, float]  # the quiet client's p50, p99 (ms) alone
    during: tuple[float, float]  # and during the flood
    quiet_lost: int  # the quiet client's queries unanswered during the flood
    sent: int  # the flood's queries
    answered: int
    rss: tuple[float, float]  # MB, before and after (iptserver)
    kernel_dropped: int = 0  # the flood's datagrams the kernel dropped (iptserver's guard)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="each latency run")
    parser.add_argument("--names", default="100000,1000000", help="memory: unique names")
    parser.add_argument("--quick", action="store_true", help="a small run, to see it works")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.names = 2.0, "5000"
    counts = [int(n) for n in args.names.split(",")]
    flood_names = len(PATHS) * sum(int(rate * args.seconds * 1.1) for rate in FLOODS)
    with tempfile.TemporaryDirectory(prefix="iptshostile") as tmp:
        bench = Bench(Path(tmp), flood_names + sum(counts) + 1000)
        try:
            bench.setup()
            ok = floods(bench, args.seconds)
            memory(bench, counts)
        finally:
            bench.teardown()
    return 0 if ok else 1


def floods(bench: Bench, seconds: float) -> bool:
    ok = True
    print(f"Flood from one client ({FLOODER}), a quiet one ({QUIET}) at {QUIET_QPS} q/s")
    print(
        "\n  path                 flood q/s   quiet p50/p99 ms   during p50/p99 ms   "
        "quiet lost   flood answered   kernel dropped   RSS MB before/after"
    )
    for rate in FLOODS:
        for path in PATHS:
            result = flood(bench, path, rate, seconds)
            ok &= result.during[1] == result.during[1]  # nan: nothing answered
            print(
                f"  {path:20} {rate:9,}   {result.quiet[0]:6.2f} /{result.quiet[1]:6.2f}"
                f"     {result.during[0]:6.2f} /{result.during[1]:7.2f}   {result.quiet_lost:10}"
                f"   {result.answered:7,} of {result.sent:7,}   {result.kernel_dropped:14,}"
                f"   {result.rss[0]:6.1f} / {result.rss[1]:6.1f}"
            )
    return ok


def flood(bench: Bench, path: str, rate: int, seconds: float) -> Flooded:
    if path == "dnsmasq":
        pid = bench.dnsmasq.pid
        return measure_flood(bench, DNSMASQ, pid, rate, seconds)
    limit = DEFAULT_LIMIT if path == "iptserver" else NO_RATE_LIMIT
    with bench.iptserver(1, rate_limit=limit) as proc:
        result = measure_flood(bench, IPTSERVER, proc.pid, rate, seconds)
        result.kernel_dropped = kernel_dropped(bench)
        return result


def kernel_dropped(bench: Bench) -> int:
    """What iptserver's hashlimit rules dropped (counters of chain IPTSERVER-GUARD-L)."""
    saved = bench.exec("iptables-legacy-save", "-t", "raw", "-c")
    return sum(
        int(line[1 : line.index(":")])
        for line in saved.splitlines()
        if line.startswith("[") and "-A IPTSERVER-GUARD-L " in line
    )


def measure_flood(bench: Bench, server: str, pid: int, rate: int, seconds: float) -> Flooded:
    before = rss_mb(pid)
    quiet, _ = quiet_latency(bench, server, seconds)
    names = bench.fresh(int(rate * seconds * 1.1))
    flooder = subprocess.Popen(
        ["ip", "netns", "exec", bench.netns, "dnsperf", "-s", server, "-a", FLOODER,
         "-d", str(names), "-c", "8", "-q", "10000", "-t", "1", "-Q", str(rate),
         "-l", str(seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    time.sleep(0.5)  # the flood under way before the quiet client measures
    during, lost = quiet_latency(bench, server, seconds - 1)
    out, _ = flooder.communicate()
    sent = int(field_of(out, r"Queries sent:\s+(\d+)"))
    answered = int(field_of(out, r"Queries completed:\s+(\d+)"))
    return Flooded(quiet, during, lost, sent, answered, (before, rss_mb(pid)))


def quiet_latency(bench: Bench, server: str, seconds: float) -> tuple[tuple[float, float], int]:
    """The quiet client's p50 and p99 (ms) and its lost queries, asking repeated names."""
    out = bench.exec(
        "dnsperf", "-s", server, "-a", QUIET, "-d", str(bench.repeated()), "-c", "1",
        "-q", "50", "-t", "2", "-Q", str(QUIET_QPS), "-l", str(seconds), "-v",
    )  # fmt: skip
    times = sorted(float(m) for m in re.findall(r"^> \S+ .* ([\d.]+)$", out, re.MULTILINE))
    lost = int(field_of(out, r"Queries lost:\s+(\d+)"))
    if not times:
        return (float("nan"), float("nan")), lost
    p50, p99 = statistics.median(times), times[int(len(times) * 0.99)]
    return (p50 * 1000, p99 * 1000), lost


def memory(bench: Bench, counts: list[int]) -> None:
    """RSS of a fresh iptserver after each of ``counts`` unique names, asked once."""
    print("\n  memory: unique names answered   RSS MB (start)   learned entries   B/name")
    for count in counts:
        with bench.iptserver(1) as proc:
            pid = proc.pid
            start = rss_mb(pid)
            bench.measure(IPTSERVER, [pid], bench.fresh(count), "-n", "1")
            grown = rss_mb(pid)
            entries = bench.set_size("ipts-d0-4")
        per_name = (grown - start) * 1024 * 1024 / count
        print(f"  {count:30,}   {grown:6.1f} ({start:5.1f})   {entries:15,}   {per_name:6.0f}")


if __name__ == "__main__":
    sys.exit(main())
