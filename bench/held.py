"""A daemon holding a million learned entries: does anything it does on the side stall
the answers, and how soon does it answer again after ``kill -9``?

    python bench/held.py [--entries 1000000] [--seconds 5] [--quick]

One network namespace (bench/dnsbench.py: a dnsmasq upstream and ``iptserver run`` with
its API on). The learned set is filled to ``--entries`` with ``ipset restore`` (as a
long-running daemon would have it; asking a million names takes minutes), then a client
asks never-asked names at 200 q/s, so that every answer is written to the kernel, and
its p50/p99 is measured:

* quiet;
* while the schema is reloaded (SIGHUP once a second);
* while ``GET /v1/routes`` lists everything (one call after the other), with the call's
  time and size and the daemon's RSS before and at its highest.

Answers the daemon released unrouted (``iptserver_dns_sink_errors``) are counted in each
run. Then ``kill -9`` and a restart, without and with ``--state-dir``: the time from the
restart to the first answer, and whether the entries are still held. Exit status 1 only
if a run loses the client's queries altogether.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dnsbench import IPTSERVER, Bench, field_of, rss_mb

API = f"{IPTSERVER}:8053"
NO_LIMIT = "{client: 0, network: 0}"
ROOM = "kernel: {max_learned: 2000000}\n"  # a million held, and room to learn more
CLIENT_QPS = 200
LEARNED_SET = "ipts-d0-4"
FETCH = """
import sys, time, urllib.request
started, size = time.monotonic(), 0
with urllib.request.urlopen(sys.argv[1], timeout=300) as r:
    while chunk := r.read(1 << 20):
        size += len(chunk)
        if sys.argv[2:] == ["body"]:
            sys.stdout.buffer.write(chunk)
if sys.argv[2:] != ["body"]:
    print(time.monotonic() - started, size)
"""
PROBE = """
import socket, sys, time
name = b"".join(bytes([len(label)]) + label for label in (b"probe", b"bench", b"test"))
query = bytes.fromhex("abcd01000001000000000000") + name + b"\\x00\\x00\\x01\\x00\\x01"
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.05)
        try:
            s.sendto(query, (sys.argv[1], 53))
            s.recv(512)
        except OSError:
            time.sleep(0.01)
            continue
    print(time.monotonic())
    break
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="each latency run")
    parser.add_argument("--quick", action="store_true", help="a small run, to see it works")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.seconds = 20_000, 2.0
    fresh = int(CLIENT_QPS * args.seconds * 1.2) * 3 + 10
    with tempfile.TemporaryDirectory(prefix="iptsheld") as tmp:
        work = Path(tmp)
        bench = Bench(work, fresh)
        try:
            bench.setup()
            return run(bench, work, args.entries, args.seconds)
        finally:
            bench.teardown()


def run(bench: Bench, work: Path, entries: int, seconds: float) -> int:
    state = work / "state"
    ok = True
    proc = bench.start_iptserver(1, NO_LIMIT, "--api", API, more=ROOM)
    bench.wait_answering(IPTSERVER)
    fill(bench, work, entries)
    print(f"held: {bench.set_size(LEARNED_SET):,} learned entries, {CLIENT_QPS} new names/s asked")
    print("                          p50 ms   p99 ms   lost   unrouted   beside")
    ok &= report("quiet", measure(bench, seconds, lambda stop: ""))

    def reloads(stop: threading.Event) -> str:
        count, before = 0, rss_mb(proc.pid)
        while not stop.wait(1.0):
            proc.send_signal(signal.SIGHUP)
            count += 1
        return f"{count} reloads; RSS {before:.1f} MB before, {rss_mb(proc.pid):.1f} MB after"

    ok &= report("reload each second", measure(bench, seconds, reloads))

    def listings(stop: threading.Event) -> str:
        pid = proc.pid  # ip netns exec execs the daemon
        before = peak = rss_mb(pid)
        calls, took, size = 0, 0.0, 0
        while not stop.is_set():
            fetch = bench.python(FETCH, f"http://{API}/v1/routes?kind=learned")
            while fetch.poll() is None:
                peak = max(peak, rss_mb(pid))
                time.sleep(0.05)
            seconds, length = fetch.communicate()[0].split()
            took += float(seconds)
            size += int(length)
            calls += 1
        return (
            f"{calls} calls, {took / max(calls, 1):.1f} s and {size / max(calls, 1) / 1e6:.0f} MB "
            f"each; RSS {before:.1f} MB before, {peak:.1f} MB at most"
        )

    ok &= report("GET /v1/routes", measure(bench, seconds, listings))
    print()
    with_state = ("--state-dir", str(state))
    proc = restart(bench, proc, "plain", ())
    proc.kill()
    proc.wait()
    proc = bench.start_iptserver(
        1, NO_LIMIT, "--api", API, *with_state, more=ROOM
    )  # writes the state
    bench.wait_answering(IPTSERVER)
    proc = restart(bench, proc, "--state-dir", with_state)
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    return 0 if ok else 1


def get(bench: Bench, path: str) -> str:
    """The body of a GET to the daemon's API (from inside the namespace)."""
    body, _ = bench.python(FETCH, f"http://{API}{path}", "body").communicate()
    return body


def restart(
    bench: Bench, proc: subprocess.Popen[bytes], label: str, extra: tuple[str, ...]
) -> subprocess.Popen[bytes]:
    """``kill -9`` the daemon, start it again; say how soon it answered."""
    proc.kill()
    proc.wait()
    held = bench.set_size(LEARNED_SET)
    probe = bench.python(PROBE, IPTSERVER)
    started = time.monotonic()
    proc = bench.start_iptserver(1, NO_LIMIT, "--api", API, *extra, more=ROOM)
    answered = probe.communicate()[0].strip()
    after = float(answered) - started if answered else float("nan")
    bench.wait_answering(IPTSERVER)
    print(
        f"kill -9, restart ({label}): first answer {after:.2f} s after the restart; "
        f"{held:,} entries held then, {bench.set_size(LEARNED_SET):,} now"
    )
    return proc


def fill(bench: Bench, work: Path, entries: int) -> None:
    """``entries`` learned entries of exit bench, an hour to live."""
    mark = json.loads(get(bench, "/v1/exits"))[0]["mark"]
    path = work / "entries"
    lines = [
        f"add {LEARNED_SET} {(0x64400000 + i) >> 24}.{(0x64400000 + i) >> 16 & 255}."
        f"{(0x64400000 + i) >> 8 & 255}.{(0x64400000 + i) & 255} timeout 3600 skbmark {mark:#x}"
        for i in range(entries)
    ]
    path.write_text("\n".join(lines) + "\n")
    bench.exec("ipset", "restore", "-exist", "-file", str(path))


def measure(
    bench: Bench, seconds: float, beside: Callable[[threading.Event], str]
) -> tuple[tuple[float, float], int, int, str]:
    """The client's p50/p99 (ms), lost queries and answers released unrouted while
    ``beside(stop)`` runs in a thread; and what ``beside`` said."""
    unrouted_before = unrouted(bench)
    names = bench.fresh(int(CLIENT_QPS * seconds * 1.2))
    stop = threading.Event()
    said: list[str] = []
    side = threading.Thread(target=lambda: said.append(beside(stop)))
    side.start()
    try:
        out = bench.exec(
            "dnsperf", "-s", IPTSERVER, "-d", str(names), "-c", "1", "-q", "50", "-t", "3",
            "-Q", str(CLIENT_QPS), "-l", str(seconds), "-v",
        )  # fmt: skip
    finally:
        stop.set()
        side.join()
    times = sorted(float(m) for m in re.findall(r"^> \S+ .* ([\d.]+)$", out, re.MULTILINE))
    lost = int(field_of(out, r"Queries lost:\s+(\d+)"))
    latency = (
        (statistics.median(times) * 1000, times[int(len(times) * 0.99)] * 1000)
        if times
        else (float("nan"), float("nan"))
    )
    return latency, lost, unrouted(bench) - unrouted_before, said[0] if said else ""


def unrouted(bench: Bench) -> int:
    text = get(bench, "/metrics")
    found = re.search(r"^iptserver_dns_sink_errors(?:_total)? (\S+)$", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no iptserver_dns_sink_errors in /metrics:\n{text}")
    return int(float(found.group(1)))


def report(label: str, result: tuple[tuple[float, float], int, int, str]) -> bool:
    (p50, p99), lost, released, said = result
    print(f"  {label:22} {p50:7.2f}  {p99:7.2f}  {lost:5}  {released:9}   {said}")
    return p50 == p50  # not NaN: some answers came


if __name__ == "__main__":
    sys.exit(main())
