"""What the PowerDNS Recursor plugin costs: queries/s and latency through a real
``pdns_recursor``, with the plugin and without it, side by side in one run.

The plugin hands every answer holding addresses to iptserver before the recursor sends
it, so its cost is that round trip, iptserver routing the answer, and the plugin's Lua.
The issue's goal: at most 1 ms added at p99, at most 20% of throughput lost.

Setup: the lab (network namespaces), iptserver in the entry (every exit of the lab, the
rule ``{exit: ru, domains: [ru]}``, its own proxy on 127.0.0.1:5399, its API on
127.0.0.1:8053, TCP and UDP), and four recursors in the entry forwarding everything to
the lab's authority, the same settings but the plugin (the config ``iptserver render
recursor`` writes): 10.77.1.1:53 with the plugin over UDP (the default transport,
udpQueryResponse), :5355 with the plugin's own datagram socket (ffi, which reads and
caps the answer through postresolve_ffi), :5356 the same but fail-closed, which makes
the plugin read the answer through postresolve as before (iptserver answers throughout,
so nothing fails), :5354 with the plugin over HTTP, :5353 with no lua-dns-script; and
the peer, ``dnsmasq --ipset`` on :5357 (cache off) in front of that plugin-less
recursor, adding every answer's addresses to sets of its own, the way a user routes by
name without iptserver. The client namespace sends each the same kind of load:
``--concurrency`` queries in flight (a worker sends its next query once the last is
answered; the workers share one list), every name new
(``<token>-<n>.bench.ru``, the lab authority's wildcard zone), so neither the packet
cache nor the record cache answers and every answer goes through the plugin and is
routed by the ``ru`` rule (the matching-name case: every answer posted, its address
learned). The queries are split into rounds that rotate the recursors' order, so a
noisy machine hurts all alike. Each concurrency level is a separate measurement.

Names are new, addresses are not: ``bench.ru`` answers one of 50 addresses (as popular
CDN addresses come back again and again), and iptserver writes an entry the kernel
already holds, with most of its hold left, no second time (it caps the TTL to what is
left instead). With ``--fresh-ips`` every name is asked for AAAA under
``fresh.bench.ru``, which answers a new address each: every answer is a kernel write.

Both figures include the lab authority (a Python server) behind the recursor, so the
plugin's share is measured against a recursor that really recurses. Everything (client,
authority, recursors, iptserver) shares the machine's CPUs: under load the plugin's CPU
time is taken from the others, which is what the throughput ratio shows. Timing never
fails the run; wrong or missing answers do (exit 1). The CPU each recursor and iptserver
spent per query (user + system, read from /proc around each round) says who the cost is.

Run as root: ``python bench/recursor.py [--queries 3000] [--concurrency 1,32] [--fresh-ips]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dnslib import QTYPE, RCODE, DNSRecord
from labdnsmasq import make_set, start_dnsmasq

from iptserver.geoip.build import write_country_db
from iptserver.lab import Lab
from iptserver.lab.addresses import LAB_COUNTRIES
from iptserver.lab.entry import ENTRY_DNS, UPSTREAM, start_iptserver, stop_iptserver
from iptserver.lab.recursor import API, Recursor, start_recursor
from iptserver.lab.zones import BENCH_ZONE, FRESH_ZONE, synthetic

PROXY = ("127.0.0.1", 5399)  # iptserver's own proxy: required, but nobody's resolver here
PLUGIN_PORT, HTTP_PORT, PLAIN_PORT, FFI_PORT, FFI_LUA_PORT = 53, 5354, 5353, 5355, 5356
PEER_PORT = 5357  # dnsmasq --ipset in front of the plugin-less recursor
PEER_SETS = ("recursorpeer4", "recursorpeer6")
SCHEMA = f"""\
exits:
  uk: {{interface: wg-uk}}
  ru: {{interface: wg-ru}}
  us: {{interface: wg-us}}
  direct: {{interface: _DEFAULT}}
ingress: [wg-clients]
mesh: [10.77.0.0/16, "fd77::/16"]
dns:
  listen: ["{PROXY[0]}:{PROXY[1]}"]
  upstream: ["{UPSTREAM}"]
default: us
rules:
  - exit: ru
    domains: [ru]
"""
QUERY_TIMEOUT = 2.0  # seconds before a query is sent again
TRIES = 3  # sends per query before it counts as missing
P99_GOAL_MS = 1.0
THROUGHPUT_GOAL = 0.20  # the share of queries/s the plugin may cost


@dataclass
class Config:
    """One recursor under test and what it measured, over all its rounds."""

    label: str
    port: int
    transport: str = ""  # the plugin's (and hook, when not the transport's), "" for none
    pid: int | None = None  # its recursor's, for the CPU it spent
    latencies: list[float] = field(default_factory=list)  # seconds, one per answered query
    seconds: float = 0.0  # wall time of its rounds
    queries: int = 0
    problems: list[str] = field(default_factory=list)
    recursor_cpu: float = 0.0  # seconds of CPU its recursor spent in its rounds
    iptserver_cpu: float = 0.0  # and iptserver

    @property
    def rate(self) -> float:
        return self.queries / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Milliseconds; nearest rank."""
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))
        return ordered[rank] * 1000


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (0 without one)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def qtype_of(name: str) -> str:
    return "AAAA" if name.endswith("." + FRESH_ZONE) else "A"


def check(name: str, data: bytes) -> str | None:
    """What is wrong with the answer to ``name`` (None: the synthetic zone's record)."""
    reply = DNSRecord.parse(data)
    qtype = getattr(QTYPE, qtype_of(name))
    found = [str(rr.rdata) for rr in reply.rr if rr.rtype == qtype]
    expected = [record.value for record in synthetic(name)]
    if reply.header.rcode != RCODE.NOERROR or found != expected:
        return f"{name}: {RCODE.get(reply.header.rcode)} {found}, expected {expected}"
    return None


async def worker(
    sock: socket.socket,
    queries: Iterator[tuple[str, bytes]],
    config: Config,
    answers: list[tuple[str, bytes]],
) -> None:
    """Send queries from the shared ``queries`` one after another (the next once the
    last is answered); what comes back goes to ``answers``, checked once the clock has
    stopped."""
    loop = asyncio.get_running_loop()
    for name, packet in queries:
        started = time.perf_counter()
        data = None
        for _ in range(TRIES):
            await loop.sock_sendall(sock, packet)
            deadline = time.perf_counter() + QUERY_TIMEOUT
            while data is None and (left := deadline - time.perf_counter()) > 0:
                try:
                    got = await asyncio.wait_for(loop.sock_recv(sock, 4096), left)
                except TimeoutError:
                    break
                if got[:2] == packet[:2]:  # the ID: late answers to earlier queries are skipped
                    data = got
            if data is not None:
                break
        if data is None:
            config.problems.append(f"{name}: no answer after {TRIES} tries")
            continue
        config.latencies.append(time.perf_counter() - started)
        answers.append((name, data))


async def run_round(
    sockets: list[socket.socket], names: list[str], config: Config, port: int
) -> None:
    """Every name once against ``port``, ``len(sockets)`` in flight; adds to ``config``."""
    packets = []
    for i, name in enumerate(names):
        query = DNSRecord.question(name, qtype_of(name))
        query.header.id = i % 65536
        packets.append((name, query.pack()))
    for sock in sockets:
        sock.connect((ENTRY_DNS, port))
    answers: list[tuple[str, bytes]] = []
    shared = iter(packets)  # a worker held up by one slow answer leaves the rest to others
    started = time.perf_counter()
    await asyncio.gather(*(worker(s, shared, config, answers) for s in sockets))
    config.seconds += time.perf_counter() - started
    config.queries += len(names)
    config.problems.extend(p for p in (check(n, data) for n, data in answers) if p)


def measure(
    lab: Lab,
    configs: list[Config],
    queries: int,
    concurrency: int,
    rounds: int,
    *,
    zone: str = BENCH_ZONE,
    iptserver: int | None = None,
) -> None:
    """Warm each recursor up, then ``rounds`` rounds per config, the order rotating.
    ``iptserver``: its PID, for the CPU it spent in each config's rounds."""
    token = secrets.token_hex(4)
    counter = iter(range(10**9))

    def names(count: int) -> list[str]:
        return [f"{token}-{next(counter)}.{zone}" for _ in range(count)]

    def one(config: Config, count: int) -> None:
        sockets = [
            lab.socket("client", socket.AF_INET, socket.SOCK_DGRAM) for _ in range(concurrency)
        ]
        for sock in sockets:
            sock.setblocking(False)
        asked = names(count)
        recursor, ours = cpu_seconds(config.pid), cpu_seconds(iptserver)
        try:
            asyncio.run(run_round(sockets, asked, config, config.port))
        finally:
            for sock in sockets:
                sock.close()
        config.recursor_cpu += cpu_seconds(config.pid) - recursor
        config.iptserver_cpu += cpu_seconds(iptserver) - ours

    for config in configs:  # first contact with the authority, thread and socket warm-up
        warm = Config(config.label, config.port, pid=config.pid)
        one(warm, min(200, queries))
        config.problems.extend(warm.problems)
    per_round = max(1, queries // rounds)
    for n in range(rounds):
        shift = n % len(configs)
        order = configs[shift:] + configs[:shift]
        for config in order if n % 2 == 0 else order[::-1]:
            one(config, per_round)


def start_peer(lab: Lab) -> subprocess.Popen[bytes]:
    """``dnsmasq --ipset`` on the entry's client address, forwarding to the plugin-less
    recursor, its cache off, adding the bench zone's addresses to sets of its own."""
    for name, family in zip(PEER_SETS, ("inet", "inet6"), strict=True):
        make_set(lab, name, family)
    return start_dnsmasq(
        lab, "entry", ENTRY_DNS, f"--server={ENTRY_DNS}#{PLAIN_PORT}",
        "--dns-forward-max=1024", f"--ipset=/{BENCH_ZONE}/{','.join(PEER_SETS)}",
        port=PEER_PORT, probe=("client", f"probe.{BENCH_ZONE}"),
    )  # fmt: skip


def stop_peer(lab: Lab, proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        lab.stop_process(proc)
    for name in PEER_SETS:
        lab.run("entry", ["ipset", "destroy", name], check=False)


def set_entries(lab: Lab, name: str) -> int:
    out = lab.run("entry", ["ipset", "list", "-t", name]).stdout
    found = re.search(r"entries:\s+(\d+)", out)
    return int(found.group(1)) if found else 0


def against_peer(peer: Config, plugins: list[Config]) -> None:
    """Each plugin transport against dnsmasq --ipset in front of the same recursor."""
    print(
        f"  {peer.label:34}{peer.rate:10,.0f}{peer.percentile(50):9.2f}"
        f"{peer.percentile(99):9.2f}{peer.percentile(100):9.2f}"
    )
    for plugin in plugins:
        ratio = plugin.rate / peer.rate if peer.rate else float("nan")
        print(
            f"  {plugin.transport:>15} / dnsmasq --ipset: throughput {ratio:.2f}x (goal >= 1), "
            f"p99 {plugin.percentile(99) - peer.percentile(99):+.2f} ms, "
            f"p50 {plugin.percentile(50) - peer.percentile(50):+.2f} ms (goals <= 0)"
        )


def report(plain: Config, plugins: list[Config], concurrency: int, fresh: bool) -> None:
    addresses = "every address new (AAAA)" if fresh else "one of 50 addresses"
    print(
        f"\n{plain.queries:,} queries per recursor, {concurrency} in flight, every name new"
        f" and routed, {addresses} (through the lab authority)"
    )
    print(
        f"  {'':34}{'queries/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'CPU us/query: recursor':>24}{'iptserver':>11}"
    )
    for config in (plain, *plugins):
        per_query = 1e6 / config.queries if config.queries else float("nan")
        print(
            f"  {config.label:34}{config.rate:10,.0f}{config.percentile(50):9.2f}"
            f"{config.percentile(99):9.2f}{config.percentile(100):9.2f}"
            f"{config.recursor_cpu * per_query:24.0f}{config.iptserver_cpu * per_query:11.0f}"
        )

    def verdict(met: bool) -> str:
        return "met" if met else "NOT met"

    for plugin in plugins:
        ratio = plugin.rate / plain.rate if plain.rate else float("nan")
        cost = 1 - ratio
        p99 = plugin.percentile(99) - plain.percentile(99)
        p50 = plugin.percentile(50) - plain.percentile(50)
        print(
            f"  {plugin.transport:>15}: throughput with/without {ratio:.2f}x (cost {cost:.0%}; "
            f"goal <= {THROUGHPUT_GOAL:.0%}: {verdict(cost <= THROUGHPUT_GOAL)}); "
            f"p99 {p99:+.2f} ms (goal <= {P99_GOAL_MS:g} ms: {verdict(p99 <= P99_GOAL_MS)}); "
            f"p50 {p50:+.2f} ms"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=3000, help="per recursor (default 3000)")
    parser.add_argument(
        "--concurrency", default="1,32", help="queries in flight; a list measures each in turn"
    )
    parser.add_argument("--rounds", type=int, default=6, help="alternations of the recursors")
    parser.add_argument(
        "--fresh-ips",
        action="store_true",
        help="AAAA names under fresh.bench.ru: a new address per answer, so every answer"
        " is a kernel write (default: bench.ru's 50 addresses, which repeat)",
    )
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.concurrency.split(",")]
    if os.geteuid() != 0:
        print("bench/recursor.py builds the lab (network namespaces): run it as root")
        return 2
    if shutil.which("pdns_recursor") is None:
        print("pdns_recursor is not installed (make apt)")
        return 2
    results: list[tuple[int, Config, list[Config]]] = []
    with tempfile.TemporaryDirectory(prefix="iptserver-bench-") as tmp, Lab() as lab:
        work = Path(tmp)
        mmdb = work / "lab-country.mmdb"
        write_country_db(mmdb, LAB_COUNTRIES, "iptserver bench lab")
        schema = work / "schema.yaml"
        schema.write_text(SCHEMA, encoding="utf-8")
        schema.write_text(lab.schema_text(schema), encoding="utf-8")
        running = start_iptserver(lab, schema, mmdb, "--api", API, probe=("entry", *PROXY))
        recursors: list[Recursor] = []
        peer: subprocess.Popen[bytes] | None = None
        try:
            recursors.append(start_recursor(lab, work / "udp", port=PLUGIN_PORT))
            recursors.append(start_recursor(lab, work / "http", port=HTTP_PORT, transport="http"))
            recursors.append(start_recursor(lab, work / "plain", port=PLAIN_PORT, plugin=False))
            recursors.append(start_recursor(lab, work / "ffi", port=FFI_PORT, transport="ffi"))
            recursors.append(
                start_recursor(
                    lab, work / "ffi-lua", port=FFI_LUA_PORT, transport="ffi", fail_closed=True
                )
            )
            peer = start_peer(lab)
            load_before = os.getloadavg()[0]
            pids = [recursor.proc.pid for recursor in recursors]
            zone = FRESH_ZONE if args.fresh_ips else BENCH_ZONE
            for level in levels:
                plain = Config(f"recursor alone (port {PLAIN_PORT})", PLAIN_PORT, pid=pids[2])
                udp = Config(f"+ plugin, udp (port {PLUGIN_PORT})", PLUGIN_PORT, "udp", pids[0])
                http = Config(f"+ plugin, http (port {HTTP_PORT})", HTTP_PORT, "http", pids[1])
                ffi = Config(f"+ plugin, ffi (port {FFI_PORT})", FFI_PORT, "ffi", pids[3])
                ffi_lua = Config(
                    f"+ plugin, ffi, postresolve ({FFI_LUA_PORT})",
                    FFI_LUA_PORT,
                    "ffi, postresolve",
                    pids[4],
                )
                dnsmasq = Config(
                    f"dnsmasq --ipset + recursor ({PEER_PORT})", PEER_PORT, "peer", peer.pid
                )
                measure(
                    lab,
                    [udp, ffi, ffi_lua, http, plain, dnsmasq],
                    args.queries,
                    level,
                    args.rounds,
                    zone=zone,
                    iptserver=running.proc.pid,
                )
                results.append((level, plain, dnsmasq, [udp, ffi, ffi_lua, http]))
            load_after = os.getloadavg()[0]
            # One more answer through the udp and each ffi plugin, then a connection to its
            # address.
            routed: dict[int, str] = {}  # port -> the exit its answer's address took
            for port in (PLUGIN_PORT, FFI_PORT, FFI_LUA_PORT):
                check_name = f"check-{secrets.token_hex(4)}.{BENCH_ZONE}"
                lab.resolve("client", check_name, server=ENTRY_DNS, port=port)
                routed[port] = lab.whoami("client", synthetic(check_name)[0].value)
            labels = ("udp", "http", "plain", "ffi", "ffi, postresolve")
            not_routed = {
                label: [line for line in recursor.log.splitlines() if "not routed" in line]
                for label, recursor in zip(labels, recursors, strict=True)
                if label != "plain"
            }
            peer_entries = sum(set_entries(lab, name) for name in PEER_SETS)
        finally:
            for recursor in recursors:
                recursor.stop()
            stop_peer(lab, peer)
            stop_iptserver(running)
    print(
        f"\nthe machine's load average (1 min) was {load_before:.1f} before, {load_after:.1f}"
        f" after, on {os.cpu_count()} CPUs (the bench included; other work skews the figures)"
    )
    problems = []
    for level, plain, dnsmasq, plugins in results:
        report(plain, plugins, level, args.fresh_ips)
        against_peer(dnsmasq, plugins)
        problems += plain.problems + dnsmasq.problems
        problems += [p for plugin in plugins for p in plugin.problems]
    print(
        "\nanswers released unrouted (the plugin's 'not routed' log lines, all levels): "
        + ", ".join(
            f"{label} {len(lines)}" for label, lines in not_routed.items() if label != "plain"
        )
        + f"; dnsmasq --ipset's sets hold {peer_entries} addresses"
    )
    for port, exit_name in routed.items():
        if exit_name != "ru":
            problems.append(
                f"a bench.ru address resolved on port {port} left by {exit_name}, not ru:"
                " the plugin did not route it"
            )
    unrouted = [line for lines in not_routed.values() for line in lines]
    if unrouted:
        problems.append(f"the plugin logged {len(unrouted)} answers as not routed, as:")
        problems.extend(unrouted[:3])
    for problem in problems[:20]:
        print(f"  problem: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} wrong or missing answers", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
