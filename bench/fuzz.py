"""A million fuzzed datagrams against a real iptserver, from outside (``make fuzz``).

    python bench/fuzz.py [--count 1000000] [--rate 5000]

One network namespace (bench/dnsbench.py: a dnsmasq upstream that knows n0..n999 of
bench.test, ``iptserver run`` with the rate limit off so that every datagram is read).
The fuzzer (iptserver/lab/fuzz.py) sends random datagrams, queries damaged the ways
parsers trip on, and whole queries, at ``--rate`` a second, and checks every reply: a DNS
header with QR set and an ID that was sent, the proxy's own replies no larger than their
query, and a control query (n0.bench.test) answered with its address every 10,000
datagrams. Printed: datagrams, replies by rcode, the daemon's RSS before and after, its
log's warnings and tracebacks. Exit status 1 on any problem, or a daemon that died.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dnsbench import FIRST, IPTSERVER, Bench, rss_mb

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="datagrams to send")
    parser.add_argument("--rate", type=float, default=5000.0, help="datagrams a second")
    args = parser.parse_args()
    control = f"n0.bench.test={ipaddress.IPv4Address(FIRST)}"
    with tempfile.TemporaryDirectory(prefix="iptserver-fuzz-") as tmp:
        bench = Bench(Path(tmp), total_names=1000)
        try:
            bench.setup()
            with bench.iptserver(1) as proc:
                before = rss_mb(proc.pid)
                started = time.monotonic()
                fuzzer = subprocess.run(
                    ["ip", "netns", "exec", bench.netns, sys.executable, "-m",
                     "iptserver.lab.fuzz", IPTSERVER, "53", str(args.count), control,
                     "--rate", str(args.rate)],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                seconds = time.monotonic() - started
                alive = proc.poll() is None
                after = rss_mb(proc.pid) if alive else float("nan")
            log = (Path(tmp) / "iptserver.log").read_text(errors="replace")
        finally:
            bench.teardown()
    if not fuzzer.stdout.strip():
        print(f"the fuzzer failed:\n{fuzzer.stderr}")
        return 1
    result = json.loads(fuzzer.stdout.strip().splitlines()[-1])
    rcodes = ", ".join(
        f"{RCODES.get(int(code), code)} {count:,}"
        for code, count in sorted(result["rcodes"].items(), key=lambda item: int(item[0]))
    )
    print(f"fuzz: {result['sent']:,} datagrams in {seconds:.0f} s ({args.rate:,.0f}/s asked)")
    print(f"  replies {result['replies']:,}: {rcodes}")
    print(f"  control queries answered right: {result['controls'] - len(result['problems'])}"
          f" of {result['controls']}")  # fmt: skip
    print(f"  daemon RSS {before:.1f} MB before, {after:.1f} MB after; alive: {alive}")
    tracebacks = log.count("Traceback")
    warnings = sum(" WARNING " in line for line in log.splitlines())
    print(f"  daemon log: {warnings:,} warnings, {tracebacks} tracebacks")
    for problem in result["problems"]:
        print(f"  PROBLEM: {problem}")
    return 0 if alive and not result["problems"] and not tracebacks else 1


if __name__ == "__main__":
    sys.exit(main())
