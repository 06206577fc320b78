"""A network namespace with a DNS upstream, ``dnsmasq --ipset`` and ``iptserver run`` in
it, and dnsperf to load them: what the DNS benches (dns.py, hostile.py) share.

The upstream is dnsmasq answering from a hosts file (every name ``n<i>.bench.test`` its
own IPv4 address), on 127.0.0.2; the peer, ``dnsmasq --ipset`` with its cache off, on
127.0.0.3; iptserver on 127.0.0.4, with a schema that rules ``bench.test`` to a tunnel
exit. Run as root; the namespace is deleted by ``teardown``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

UPSTREAM, DNSMASQ, IPTSERVER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
FIRST = int(ipaddress.IPv4Address("11.0.0.1"))  # unrouted here: nothing is ever sent there
NO_RATE_LIMIT = "{client: 0, network: 0}"
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
  rate_limit: {rate_limit}
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
            # dnsmasq reads the whole hosts file before it answers: a million names take
            # a while (the first bench runs here failed at 30 s with 1.3 million).
            self.wait_answering(server, timeout=30 + self.total / 10_000)

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

    def python(self, script: str, *argv: str) -> subprocess.Popen[str]:
        """``script`` run in the namespace, its output piped."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c", script, *argv],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

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
    def iptserver(
        self, workers: int, rate_limit: str = NO_RATE_LIMIT, *extra: str
    ) -> Iterator[subprocess.Popen[bytes]]:
        """``rate_limit``: the schema's ``dns.rate_limit`` (default: none, as dnsperf is
        one client at full speed); ``extra``: more ``iptserver run`` arguments."""
        proc = self.start_iptserver(workers, rate_limit, *extra)
        try:
            self.wait_answering(IPTSERVER)
            yield proc
        finally:
            stop(proc)
            if proc in self.procs:
                self.procs.remove(proc)

    def start_iptserver(
        self, workers: int = 1, rate_limit: str = NO_RATE_LIMIT, *extra: str, more: str = ""
    ) -> subprocess.Popen[bytes]:
        """``more``: YAML appended to the schema."""
        schema = self.work / "schema.yaml"
        text = SCHEMA.format(listen=IPTSERVER, upstream=UPSTREAM, rate_limit=rate_limit)
        schema.write_text(text + more)
        argv = [sys.executable, "-m", "iptserver", "run", "--config", str(schema), *extra]
        if workers > 1:
            argv += ["--workers", str(workers)]
        return self.spawn(*argv, log=self.work / "iptserver.log")

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
        completed = int(field_of(out, r"Queries completed:\s+(\d+)"))
        lost = int(field_of(out, r"Queries lost:\s+(\d+)"))
        qps = float(field_of(out, r"Queries per second:\s+([\d.]+)"))
        noerror = int(field_of(out + " NOERROR 0", r"NOERROR (\d+)"))
        cpu = ticks * 1e6 / 100 / max(completed, 1)
        return Result(qps, lost, cpu, completed, completed - noerror)

    def latency(self, server: str, names: Path, seconds: float) -> tuple[float, float]:
        out = self.dnsperf(server, names, "-Q", "2000", "-l", str(seconds), "-v")
        times = sorted(float(m) for m in re.findall(r"^> \S+ .* ([\d.]+)$", out, re.MULTILINE))
        if not times:
            return float("nan"), float("nan")
        return times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000

    def set_size(self, name: str) -> int:
        return int(field_of(self.exec("ipset", "list", "-t", name), r"entries:\s+(\d+)"))


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


def field_of(text: str, pattern: str) -> str:
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
    return int(field_of(status, r"VmRSS:\s+(\d+)")) / 1024
