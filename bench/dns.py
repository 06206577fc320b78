"""The DNS path side by side with ``dnsmasq --ipset``: one workload, one run, three paths.

    python bench/dns.py [--queries 20000] [--rounds 3] [--seconds 5] [--workers 2] [--quick]

Everything runs in one network namespace made for the run (deleted after): an upstream
(dnsmasq answering from a hosts file: every name its own IPv4 address), and in front of
it, each on its own loopback address,

* ``direct``: dnsperf asks the upstream itself (what the box can do at all);
* ``dnsmasq``: ``dnsmasq --ipset=/bench.test/SET`` with its cache off, forwarding to the
  upstream and adding every answer's address to a ``hash:ip`` set with a timeout, which is
  how a user would route by name without us;
* ``iptserver``: ``iptserver run`` with a schema that rules ``bench.test`` to a tunnel exit,
  so every answer is decided and its address written into the learned set before the
  answer is released; ``iptserver xN`` the same with ``--workers N``.

Workloads: ``unique`` (every query a name no path has asked before: every answer a kernel
write; dnsperf runs through a file of fresh names once) and ``repeated`` (1,000 names over
and over for ``--seconds``: iptserver writes each once, then caps TTLs). Rounds rotate
the order of the paths, so a noisy machine hurts all alike. Each figure is the median of
the rounds. Then, at a fixed 2,000 q/s, latency p50/p99 from dnsperf's per-query report (iptserver
having answered each name once before: the steady state),
and the CPU each server spent per query (user + system from /proc, all its processes).
Last, the memory of an iptserver that has learned ``--held`` addresses.

Nothing fails the run but a path that loses queries or does not write its set: that is
printed, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from dnsbench import DNSMASQ, IPTSERVER, UPSTREAM, Bench, Result, family, rss_mb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20000, help="unique names per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="repeated and latency runs")
    parser.add_argument("--workers", type=int, default=2, help="the multi-process variant")
    parser.add_argument("--held", type=int, default=100000, help="addresses for the RSS figure")
    parser.add_argument("--quick", action="store_true", help="a small run, to see it works")
    args = parser.parse_args()
    if args.quick:
        args.queries, args.rounds, args.seconds, args.held = 2000, 1, 2.0, 5000
    paths = ["direct", "dnsmasq", "iptserver", f"iptserver x{args.workers}"]
    total = args.queries * args.rounds * len(paths) + args.held + 1000
    for tool in ("dnsperf", "dnsmasq", "ipset"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: run 'make setup'")
            return 1
    with tempfile.TemporaryDirectory(prefix="iptsbench") as tmp:
        bench = Bench(Path(tmp), total)
        try:
            bench.setup()
            return report(bench, args, paths)
        finally:
            bench.teardown()


def measure_path(bench: Bench, path: str, workers: int, names: Path, *extra: str) -> Result:
    if path == "direct":
        return bench.measure(UPSTREAM, family(bench.upstream.pid), names, *extra)
    if path == "dnsmasq":
        return bench.measure(DNSMASQ, family(bench.dnsmasq.pid), names, *extra)
    with bench.iptserver(workers if "x" in path else 1) as proc:
        result = bench.measure(IPTSERVER, family(proc.pid), names, *extra)
        written = bench.set_size("ipts-d0-4")
    routed = result.completed - result.failed
    if "-n" in extra and written < routed:
        print(f"  {path}: {routed} NOERROR answers but {written} learned entries")
        result.lost += routed - written
    return result


def report(bench: Bench, args: argparse.Namespace, paths: list[str]) -> int:
    results: dict[tuple[str, str], list[Result]] = {}
    for r in range(args.rounds):
        order = paths[r % len(paths) :] + paths[: r % len(paths)]
        for path in order:
            unique = bench.fresh(args.queries)
            results.setdefault(("unique", path), []).append(
                measure_path(bench, path, args.workers, unique, "-n", "1")
            )
            results.setdefault(("repeated", path), []).append(
                measure_path(bench, path, args.workers, bench.repeated(), "-l", str(args.seconds))
            )
    ok = True
    print(f"DNS path, {args.rounds} rounds (median), dnsperf 4 clients x 100 in flight")
    for workload in ("unique", "repeated"):
        print(f"\n  {workload:9}      q/s    CPU us/query   lost  SERVFAIL")
        for path in paths:
            rs = results[(workload, path)]
            lost = sum(r.lost for r in rs)
            ok &= lost == 0
            print(
                f"  {path:14} {statistics.median(r.qps for r in rs):9,.0f}"
                f" {statistics.median(r.cpu_us for r in rs):10.1f} {lost:8}"
                f" {sum(r.failed for r in rs):8}"
            )
    print()
    for workload in ("unique", "repeated"):
        peer = statistics.median(r.qps for r in results[(workload, "dnsmasq")])
        peer_cpu = statistics.median(r.cpu_us for r in results[(workload, "dnsmasq")])
        for path in paths[2:]:
            rs = results[(workload, path)]
            print(
                f"  {workload:9} {path:14} / dnsmasq --ipset: throughput "
                f"{statistics.median(r.qps for r in rs) / peer:.2f}x, CPU per query "
                f"{statistics.median(r.cpu_us for r in rs) / peer_cpu:.2f}x"
            )
    print("\n  latency at 2,000 q/s (repeated names)   p50 ms   p99 ms   p99 over direct")
    direct_p99 = float("nan")
    for path in paths:  # direct first: the others are compared with it
        if path.startswith("iptserver"):
            workers = args.workers if "x" in path else 1
            with bench.iptserver(workers):
                # Steady state: the names' entries written once before the clock runs.
                bench.dnsperf(IPTSERVER, bench.repeated(), "-n", "1")
                p50, p99 = bench.latency(IPTSERVER, bench.repeated(), args.seconds)
        else:
            p50, p99 = bench.latency(UPSTREAM if path == "direct" else DNSMASQ,
                                     bench.repeated(), args.seconds)  # fmt: skip
        if path == "direct":
            direct_p99 = p99
        print(f"  {path:38} {p50:8.2f} {p99:8.2f} {p99 - direct_p99:+10.2f}")
    ok &= memory(bench, args.held)
    return 0 if ok else 1


def memory(bench: Bench, held: int) -> bool:
    """iptserver's RSS at start and holding ``held`` learned addresses."""
    with bench.iptserver(1) as proc:
        pid = proc.pid  # ip netns exec execs the daemon
        start = rss_mb(pid)
        bench.measure(IPTSERVER, [pid], bench.fresh(held), "-n", "1")
        entries = bench.set_size("ipts-d0-4")
        grown = rss_mb(pid)
    print(
        f"\n  RSS at {entries:,} learned: {grown:.1f} MB (start {start:.1f} MB, "
        f"{(grown - start) * 1024 * 1024 / max(entries, 1):.0f} B per entry)"
    )
    if entries < held * 0.99:
        print(f"  only {entries:,} of {held:,} answers were written to the learned set")
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
