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
the rounds. Then, at a fixed 2,000 q/s, latency p50/p99 from dnsperf's per-query report,
and the CPU each server spent per query (user + system from /proc, all its processes).
Last, the memory of an iptserver that has learned ``--held`` addresses.

Nothing fails the run but a path that loses queries or does not write its set: that is
printed, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

UPSTREAM, DNSMASQ, IPTSERVER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
FIRST = int(ipaddress.IPv4Address("11.0.0.1"))  # unrouted here: nothing is ever sent there
SCHEMA = """
exits:
  bench: {{interface: wg-bench}}
rules:
  - exit: bench
    domains: [bench.test]
ttl: {{hold: 300}}
dns:
  listen: ["{listen}:53"]
  upstream: ["{upstream}:53"]
  rate_limit: {{client: 0, network: 0}}  # dnsperf is one client at full speed
"""


@dataclass
class Result:
    qps: float
    lost: int  # queries not answered (or, for iptserver, answers not written)
    cpu_us: float  # CPU per query of the server's processes
    completed: int
    failed: int  # answered, but not NOERROR (SERVFAIL: the upstream did not answer in time)


class Bench:
    def __init__(self, work: Path, total_names: int) -> None:
        self.work = work
        self.netns = f"iptsbench{secrets.token_hex(3)}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.next_name = 0
        self.total = total_names

    # -- the namespace and its servers ----------------------------------------------------

    def setup(self) -> None:
        run("ip", "netns", "add", self.netns)
        # dnsperf sends nothing from a namespace whose only IPv4 address is on lo
        self.ip("link set lo up", "link add wg-bench type veth peer name wg-benchp",
                "link set wg-bench up", "link set wg-benchp up",
                "addr add 10.99.0.1/24 dev wg-bench")  # fmt: skip
        hosts = self.work / "hosts"
        with hosts.open("w") as f:
            for i in range(self.total):
                f.write(f"{ipaddress.IPv4Address(FIRST + i)} n{i}.bench.test\n")
        self.upstream = self.spawn(
            "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--user=root",
            f"--addn-hosts={hosts}", f"--listen-address={UPSTREAM}", "--bind-interfaces",
            "--local=/bench.test/", "--cache-size=10000",
        )  # fmt: skip
        self.exec("ipset", "create", "bench4", "hash:ip", "timeout", "300", "maxelem", "2000000")
        self.dnsmasq = self.spawn(
            "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--user=root",
            f"--server={UPSTREAM}", f"--listen-address={DNSMASQ}", "--bind-interfaces",
            "--cache-size=0", "--ipset=/bench.test/bench4",
        )  # fmt: skip
        for server in (UPSTREAM, DNSMASQ):
            self.wait_answering(server)

    def teardown(self) -> None:
        for proc in self.procs:
            stop(proc)
        subprocess.run(["ip", "netns", "del", self.netns], check=False)

    def ip(self, *commands: str) -> None:
        subprocess.run(
            ["ip", "-n", self.netns, "-batch", "-"], input="\n".join(commands), text=True,
            check=True,
        )  # fmt: skip

    def exec(self, *argv: str) -> str:
        return run("ip", "netns", "exec", self.netns, *argv)

    def spawn(self, *argv: str, log: Path | None = None) -> subprocess.Popen[bytes]:
        out = log.open("wb") if log else subprocess.DEVNULL
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *argv], stdout=out, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc

    def wait_answering(self, server: str, timeout: float = 30) -> None:
        names = self.work / "probe"
        names.write_text("n0.bench.test A\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.dnsperf(server, names, "-n", "1", "-t", "1")
            if "Queries completed:    1 " in out:
                return
            time.sleep(0.2)
        raise RuntimeError(f"the DNS server on {server} does not answer")

    @contextlib.contextmanager
    def iptserver(self, workers: int) -> Iterator[subprocess.Popen[bytes]]:
        schema = self.work / "schema.yaml"
        schema.write_text(SCHEMA.format(listen=IPTSERVER, upstream=UPSTREAM))
        argv = [sys.executable, "-m", "iptserver", "run", "--config", str(schema)]
        if workers > 1:
            argv += ["--workers", str(workers)]
        proc = self.spawn(*argv, log=self.work / "iptserver.log")
        try:
            self.wait_answering(IPTSERVER)
            yield proc
        finally:
            stop(proc)
            self.procs.remove(proc)

    # -- measuring ----------------------------------------------------------------------

    def fresh(self, count: int) -> Path:
        """A file of ``count`` names never asked before."""
        if self.next_name + count > self.total:
            raise RuntimeError("out of fresh names: raise --names")
        path = self.work / f"q{self.next_name}"
        start, self.next_name = self.next_name, self.next_name + count
        path.write_text("".join(f"n{i}.bench.test A\n" for i in range(start, start + count)))
        return path

    def repeated(self) -> Path:
        path = self.work / "repeated"
        path.write_text("".join(f"n{i}.bench.test A\n" for i in range(1000)))
        return path

    def dnsperf(self, server: str, names: Path, *extra: str) -> str:
        return self.exec("dnsperf", "-s", server, "-d", str(names), "-c", "4", "-q", "100",
                         *extra)  # fmt: skip

    def measure(self, server: str, pids: list[int], names: Path, *extra: str) -> Result:
        before = cpu_ticks(pids)
        out = self.dnsperf(server, names, *extra)
        ticks = cpu_ticks(pids) - before
        completed = int(_field(out, r"Queries completed:\s+(\d+)"))
        lost = int(_field(out, r"Queries lost:\s+(\d+)"))
        qps = float(_field(out, r"Queries per second:\s+([\d.]+)"))
        noerror = int(_field(out + " NOERROR 0", r"NOERROR (\d+)"))
        cpu = ticks * 1e6 / 100 / max(completed, 1)
        return Result(qps, lost, cpu, completed, completed - noerror)

    def latency(self, server: str, names: Path, seconds: float) -> tuple[float, float]:
        out = self.dnsperf(server, names, "-Q", "2000", "-l", str(seconds), "-v")
        times = sorted(float(m) for m in re.findall(r"^> \S+ .* ([\d.]+)$", out, re.MULTILINE))
        if not times:
            return float("nan"), float("nan")
        return times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000

    def set_size(self, name: str) -> int:
        return int(_field(self.exec("ipset", "list", "-t", name), r"entries:\s+(\d+)"))


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _field(text: str, pattern: str) -> str:
    found = re.search(pattern, text)
    if found is None:
        raise RuntimeError(f"no {pattern!r} in:\n{text}")
    return found.group(1)


def family(pid: int) -> list[int]:
    """``pid`` and its descendants (ip netns exec execs; workers are children)."""
    out = run("ps", "-e", "-o", "pid=,ppid=")
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, parent = map(int, line.split())
        children.setdefault(parent, []).append(p)
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(_field(status, r"VmRSS:\s+(\d+)")) / 1024


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
