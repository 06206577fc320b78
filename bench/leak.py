"""Wrong first exits: resolve a ruled name, connect at once, see which way the first
packet left. Side by side with ``dnsmasq --ipset``, at rest and under load.

    python bench/leak.py [--trials 1000] [--seconds-max 5]

The lab (network namespaces, real WireGuard exits): iptserver in the entry with the rule
``{exit: ru, domains: [ru]}``; beside it, on 10.77.1.1 port 5353, ``dnsmasq --ipset``
(cache off) adding the same names' addresses to a set of its own, which a mangle rule
turns into ru's fwmark (as a user routing by name without iptserver would do). A trial:
the client asks for a name never asked before under ``fresh.bench.ru`` (a new AAAA
address per name, so no set holds it yet), and the moment the answer is in, opens a TCP
connection to it; the far side's whoami server says which exit's address the connection
came from. The connection's first packet picks its exit (conntrack keeps it), so any
answer released before its route is in the kernel shows as a wrong exit.

Each path runs its trials at rest, then while dnsperf (from the client, unique names
under ``bench.ru``) loads it at 80 % of the queries/s measured as its maximum just
before. Printed: trials, wrong first exits (and where they went), failed trials. Nothing
fails the run but trials that could not be made at all (exit status 1); the counts are
the result.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from labdnsmasq import make_set, start_dnsmasq

from iptserver.geoip.build import write_country_db
from iptserver.lab import Lab, LabError
from iptserver.lab.addresses import LAB_COUNTRIES
from iptserver.lab.entry import ENTRY_DNS, UPSTREAM, start_iptserver, stop_iptserver
from iptserver.lab.zones import BENCH_ZONE, FRESH_ZONE

PEER_PORT = 5353
PEER_SET = "leakpeer6"
# The upstream of both paths: dnsmasq in "internet" answering the load's names itself (as
# fast as C: the lab's authority, in Python, would cap the load below the proxy's
# maximum) and forwarding the rest (the trials' fresh names) to the authority.
FAST_UPSTREAM = "203.0.113.54"
LOAD_ZONE = "load." + BENCH_ZONE
LOAD_ADDRESS = "203.0.113.201"
SCHEMA = f"""\
exits:
  uk: {{interface: wg-uk}}
  ru: {{interface: wg-ru}}
  us: {{interface: wg-us}}
  direct: {{interface: _DEFAULT}}
ingress: [wg-clients]
mesh: [10.77.0.0/16, "fd77::/16"]
dns:
  listen: ["{ENTRY_DNS}:53"]
  upstream: ["{FAST_UPSTREAM}:53"]
  rate_limit: {{client: 0, network: 0}}  # the load is one client at 80 % of the maximum
rules:
  - exit: ru
    domains: [ru]
"""
LOAD_SHARE = 0.8


@dataclass
class Trials:
    made: int = 0
    wrong: Counter[str] = field(default_factory=Counter)  # where the wrong ones went
    failed: Counter[str] = field(default_factory=Counter)  # no answer, no connection


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000, help="per path and load")
    parser.add_argument("--seconds-max", type=float, default=5.0, help="the maximum's run")
    args = parser.parse_args()
    results: dict[tuple[str, str], Trials] = {}
    with tempfile.TemporaryDirectory(prefix="iptsleak") as tmp, Lab() as lab:
        work = Path(tmp)
        mmdb = work / "lab-country.mmdb"
        write_country_db(mmdb, LAB_COUNTRIES, "iptserver leak bench")
        schema = work / "schema.yaml"
        schema.write_text(SCHEMA, encoding="utf-8")
        schema.write_text(lab.schema_text(schema), encoding="utf-8")
        with fast_upstream(lab):
            daemon = start_iptserver(lab, schema, mmdb, upstream=(f"{FAST_UPSTREAM}:53",))
            try:
                with peer(lab):
                    for path, port in (("iptserver", 53), ("dnsmasq --ipset", PEER_PORT)):
                        results |= measure(lab, work, path, port, args)
            finally:
                stop_iptserver(daemon)
    return report(results)


def measure(
    lab: Lab, work: Path, path: str, port: int, args: argparse.Namespace
) -> dict[tuple[str, str], Trials]:
    maximum = max_qps(lab, work, port, args.seconds_max)
    print(f"{path}: at most {maximum:,.0f} answers/s to the client (NOERROR)")
    results = {(path, "at rest"): trials(lab, port, args.trials)}
    with load(lab, work, port, maximum * LOAD_SHARE):
        results[(path, f"{LOAD_SHARE:.0%} load")] = trials(lab, port, args.trials)
    return results


@contextlib.contextmanager
def fast_upstream(lab: Lab) -> Iterator[None]:
    lab.run("internet", ["ip", "addr", "add", f"{FAST_UPSTREAM}/32", "dev", "lo"])
    proc = start_dnsmasq(
        lab, "internet", FAST_UPSTREAM, f"--address=/{LOAD_ZONE}/{LOAD_ADDRESS}",
        f"--server={UPSTREAM.split(':')[0]}", "--dns-forward-max=4096",
        probe=("entry", f"probe.{LOAD_ZONE}"),
    )  # fmt: skip
    try:
        yield
    finally:
        lab.stop_process(proc)
        lab.run("internet", ["ip", "addr", "del", f"{FAST_UPSTREAM}/32", "dev", "lo"], check=False)


def report(results: dict[tuple[str, str], Trials]) -> int:
    print("\n  path               load        trials   wrong first exit   failed")
    ok = True
    for (path, load_name), result in results.items():
        wrong = sum(result.wrong.values())
        where = f" ({', '.join(f'{n} via {w}' for w, n in result.wrong.items())})" if wrong else ""
        failed = sum(result.failed.values())
        print(f"  {path:18} {load_name:10} {result.made:8}   {wrong:16}{where}   {failed:6}")
        for why, count in result.failed.most_common(3):
            print(f"      {count} x {why}")
        ok &= result.made > 0 and failed < result.made / 2
    return 0 if ok else 1


def trials(lab: Lab, port: int, count: int) -> Trials:
    """``count`` resolve-then-connect trials from the client through ``port``."""
    result = Trials()
    token = secrets.token_hex(3)
    for n in range(count):
        name = f"leak-{token}-{n}.{FRESH_ZONE}"
        try:
            answer = lab.query("client", name, "AAAA", server=ENTRY_DNS, port=port, timeout=2)
        except LabError as e:
            result.failed[f"no answer: {str(e).splitlines()[0][:80]}"] += 1
            continue
        addresses = [value for _, kind, value, _ in answer.records if kind == "AAAA"]
        if answer.rcode != "NOERROR" or not addresses:
            result.failed[f"answer {answer.rcode} {addresses}"] += 1
            continue
        try:
            way = lab.whoami("client", addresses[0], timeout=2)
        except LabError as e:
            result.failed[f"no connection: {str(e).splitlines()[0][:80]}"] += 1
            continue
        result.made += 1
        if way != "ru":
            result.wrong[way] += 1
    return result


@contextlib.contextmanager
def peer(lab: Lab) -> Iterator[None]:
    """``dnsmasq --ipset`` on the entry's client address, port 5353, writing PEER_SET,
    which a mangle rule after iptserver's turns into ru's mark (saved with the
    connection, as iptserver's own rules do)."""
    mark = exit_mark(lab, "ru")
    make_set(lab, PEER_SET, "inet6")
    rules = [
        ["-m", "set", "--match-set", PEER_SET, "dst", "-j", "MARK", "--set-mark", mark],
        ["-m", "set", "--match-set", PEER_SET, "dst", "-j", "CONNMARK", "--save-mark"],
    ]
    for rule in rules:
        lab.run(
            "entry",
            ["ip6tables-legacy", "-t", "mangle", "-A", "PREROUTING", "-i", lab.ingress, *rule],
        )
    proc = start_dnsmasq(
        lab, "entry", ENTRY_DNS, f"--server={FAST_UPSTREAM}", "--dns-forward-max=1024",
        f"--ipset=/{FRESH_ZONE}/{PEER_SET}", port=PEER_PORT,
        probe=("client", f"probe.{LOAD_ZONE}"),
    )  # fmt: skip
    try:
        yield
    finally:
        lab.stop_process(proc)
        for rule in rules:
            lab.run(
                "entry",
                ["ip6tables-legacy", "-t", "mangle", "-D", "PREROUTING", "-i", lab.ingress, *rule],
                check=False,
            )
        lab.run("entry", ["ipset", "destroy", PEER_SET], check=False)


def exit_mark(lab: Lab, exit_name: str) -> str:
    """The fwmark iptserver gave ``exit_name``: the rule that looks up the table whose
    default route leaves by the exit's interface."""
    interface = lab.wg_interface(exit_name)
    for line in lab.run("entry", ["ip", "-6", "rule"]).stdout.splitlines():
        found = re.search(r"fwmark (0x[0-9a-f]+)(?:/0x[0-9a-f]+)? lookup (\S+)", line)
        if found is None:
            continue
        routes = lab.run("entry", ["ip", "-6", "route", "show", "table", found.group(2)]).stdout
        if f"dev {interface}" in routes:
            return found.group(1)
    raise LabError(f"no fwmark rule leads to {interface}")


def max_qps(lab: Lab, work: Path, port: int, seconds: float) -> float:
    """Answers a second that say NOERROR (a busy server's REFUSED or SERVFAIL is no
    answer)."""
    out = dnsperf(lab, work, port, "-l", str(seconds))
    qps, completed, noerror = (
        float(number(out, pattern))
        for pattern in (
            r"Queries per second:\s+([\d.]+)",
            r"Queries completed:\s+(\d+)",
            r"NOERROR (\d+)",
        )
    )
    return qps * noerror / max(completed, 1)


def number(text: str, pattern: str) -> str:
    found = re.search(pattern, text)
    if found is None:
        raise LabError(f"dnsperf printed no {pattern!r}:\n{text}")
    return found.group(1)


@contextlib.contextmanager
def load(lab: Lab, work: Path, port: int, qps: float) -> Iterator[None]:
    """dnsperf at ``qps`` from the client for as long as the block runs."""
    names = load_names(work, 200000)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("client"), "dnsperf", "-s", ENTRY_DNS, "-p", str(port),
         "-d", str(names), "-c", "4", "-q", "200", "-Q", str(int(qps)), "-l", "3600"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1)  # under way before the first trial
        yield
    finally:
        proc.terminate()
        proc.wait()


def dnsperf(lab: Lab, work: Path, port: int, *extra: str) -> str:
    names = load_names(work, 200000)
    return subprocess.run(
        ["ip", "netns", "exec", lab.ns("client"), "dnsperf", "-s", ENTRY_DNS, "-p", str(port),
         "-d", str(names), "-c", "4", "-q", "200", *extra],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def load_names(work: Path, count: int) -> Path:
    """Unique names under the load zone (all one address: load, not leaks)."""
    path = work / f"load-{secrets.token_hex(3)}"
    token = secrets.token_hex(3)
    path.write_text("".join(f"load-{token}-{i}.{LOAD_ZONE} A\n" for i in range(count)))
    return path


if __name__ == "__main__":
    sys.exit(main())
