"""The mangle chain, the DNS redirect and the DoH block against the real kernel, as
``iptables-legacy-save`` shows them in a namespace of the test's own.

The firewall module alone is driven (``firewall_driver``, run inside the namespace: no
rules, routes or entries); the driver makes the plan's sets, which the chains name.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import REPO

SCHEMA = """
exits:
  uk: {interface: xuk}
  ru: {interface: xru}
default: uk
ingress: [ing0, xuk]
rules:
  - {exit: ru, nets: [203.0.113.0/24], weight: 5}
  - {exit: uk, nets: [198.51.100.0/24]}
"""
SAVE_MARK = "CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff"


def chain(version: int) -> list[str]:
    """The IPTSERVER chain ``SCHEMA`` makes: restore, private, each set then its mark
    saved, weight 5 before 0 and learned before static; the default exit last."""
    lines = [
        "-A IPTSERVER -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff",
        "-A IPTSERVER -m mark ! --mark 0x0 -j RETURN",
        f"-A IPTSERVER -m set --match-set ipts-private-{version} dst -j RETURN",
    ]
    for name in ("d5", "n5", "d0", "n0"):
        lines += [
            f"-A IPTSERVER -m set --match-set ipts-{name}-{version} dst "
            f"-j SET --map-set ipts-{name}-{version} dst --map-mark",
            f"-A IPTSERVER -m mark ! --mark 0x0 -j {SAVE_MARK}",
            "-A IPTSERVER -m mark ! --mark 0x0 -j RETURN",
        ]
    return [
        *lines,
        "-A IPTSERVER -j MARK --set-xmark 0x100/0xffffffff",
        f"-A IPTSERVER -j {SAVE_MARK}",
    ]


def drive(netns: str, schema: Path, action: str, dns_port: int | None = None) -> None:
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.dataplane.firewall_driver"]
    port = [] if dns_port is None else [str(dns_port)]
    done = subprocess.run(
        [*argv, str(schema), action, *port],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def saved(netns: str, version: int, table: str) -> list[str]:
    """The table's chains and rules, without comments and counters."""
    tool = "iptables-legacy-save" if version == 4 else "ip6tables-legacy-save"
    text = subprocess.run(
        ["ip", "netns", "exec", netns, tool, "-t", table],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [re.sub(r" \[\d+:\d+\]", "", line) for line in text.splitlines() if line[:1] in ":-"]


def rules_of(lines: list[str], name: str) -> list[str]:
    return [line for line in lines if line.startswith(f"-A {name} ")]


def everything(netns: str) -> dict[tuple[int, str], list[str]]:
    tables = ("mangle", "nat", "filter", "raw")
    return {(v, t): saved(netns, v, t) for v in (4, 6) for t in tables}


def test_the_mangle_chain_and_its_hooks(netns: str, write_schema: Callable[[str], Path]) -> None:
    drive(netns, write_schema(SCHEMA), "install")
    for version in (4, 6):
        mangle = saved(netns, version, "mangle")
        assert ":IPTSERVER -" in mangle
        assert rules_of(mangle, "IPTSERVER") == chain(version)
        assert sorted(rules_of(mangle, "PREROUTING")) == [
            "-A PREROUTING -i ing0 -j IPTSERVER",
            "-A PREROUTING -i xuk -j IPTSERVER",
        ]
        # no DNS port: the redirect chain is there but empty and unhooked; no DoH block
        nat = saved(netns, version, "nat")
        assert rules_of(nat, "IPTSERVER-DNS") == [] and rules_of(nat, "PREROUTING") == []
        assert not any("IPTSERVER-DOH" in line for line in saved(netns, version, "filter"))


def test_installing_twice_changes_nothing(netns: str, write_schema: Callable[[str], Path]) -> None:
    schema = write_schema(SCHEMA)
    drive(netns, schema, "install", 5353)
    once = everything(netns)
    drive(netns, schema, "install", 5353)
    assert everything(netns) == once
    assert (
        rules_of(once[4, "mangle"], "PREROUTING").count("-A PREROUTING -i ing0 -j IPTSERVER") == 1
    )


def test_dns_is_redirected_to_the_proxy_in_both_families(
    netns: str, write_schema: Callable[[str], Path]
) -> None:
    drive(netns, write_schema(SCHEMA), "install", 5353)
    for version in (4, 6):
        nat = saved(netns, version, "nat")
        assert rules_of(nat, "IPTSERVER-DNS") == [
            f"-A IPTSERVER-DNS -p {p} -m {p} --dport 53 -j REDIRECT --to-ports 5353"
            for p in ("udp", "tcp")
        ]
        assert sorted(rules_of(nat, "PREROUTING")) == [
            "-A PREROUTING -i ing0 -j IPTSERVER-DNS",
            "-A PREROUTING -i xuk -j IPTSERVER-DNS",
        ]


def test_a_reload_follows_the_ingress_and_the_dns_port(
    netns: str, write_schema: Callable[[str], Path]
) -> None:
    drive(netns, write_schema(SCHEMA), "install", 5353)
    drive(netns, write_schema(SCHEMA.replace("[ing0, xuk]", "[ing0]")), "install")
    for version in (4, 6):
        mangle = saved(netns, version, "mangle")
        assert rules_of(mangle, "PREROUTING") == ["-A PREROUTING -i ing0 -j IPTSERVER"]
        nat = saved(netns, version, "nat")
        assert rules_of(nat, "PREROUTING") == [] and rules_of(nat, "IPTSERVER-DNS") == []


def test_doh_is_rejected_when_asked_and_unblocked_on_reload(
    netns: str, write_schema: Callable[[str], Path]
) -> None:
    drive(netns, write_schema(SCHEMA + "dns: {block_doh: true}\n"), "install")
    unreachable = {4: "icmp-port-unreachable", 6: "icmp6-port-unreachable"}
    for version in (4, 6):
        doh = saved(netns, version, "filter")
        assert rules_of(doh, "IPTSERVER-DOH") == [
            "-A IPTSERVER-DOH -p tcp -m tcp --dport 853 -j REJECT --reject-with tcp-reset",
            f"-A IPTSERVER-DOH -p udp -m udp --dport 853 -j REJECT "
            f"--reject-with {unreachable[version]}",
            f"-A IPTSERVER-DOH -p tcp -m tcp --dport 443 -m set --match-set ipts-doh-{version} "
            "dst -j REJECT --reject-with tcp-reset",
            f"-A IPTSERVER-DOH -p udp -m udp --dport 443 -m set --match-set ipts-doh-{version} "
            f"dst -j REJECT --reject-with {unreachable[version]}",
        ]
        assert sorted(rules_of(doh, "FORWARD")) == [
            "-A FORWARD -i ing0 -j IPTSERVER-DOH",
            "-A FORWARD -i xuk -j IPTSERVER-DOH",
        ]
    drive(netns, write_schema(SCHEMA), "install")
    for version in (4, 6):
        assert not any("IPTSERVER-DOH" in line for line in saved(netns, version, "filter"))


GUARDED = SCHEMA + (
    "dns:\n"
    '  listen: ["10.9.0.1:53", "[fd00::1]:5300", "0.0.0.0:5353"]\n'
    "  rate_limit: {client: 100, network: 1000, burst: 3}\n"
)


def test_dns_floods_past_twice_the_rate_limit_are_dropped_in_the_raw_table(
    netns: str, write_schema: Callable[[str], Path]
) -> None:
    """UDP DNS to the proxy (port 53 from the ingress, the proxy's own addresses) goes
    once through hashlimit rules at twice dns.rate_limit; a limit of 0 takes them out."""
    drive(netns, write_schema(GUARDED), "install", 5353)
    guard = "-A IPTSERVER-GUARD"
    to_limits = "-g IPTSERVER-GUARD-L"
    for version, to, mask in ((4, "-d 10.9.0.1/32", 24), (6, "-d fd00::1/128", 56)):
        raw = saved(netns, version, "raw")
        assert rules_of(raw, "PREROUTING") == ["-A PREROUTING -j IPTSERVER-GUARD"]
        port = "53" if version == 4 else "5300"
        assert rules_of(raw, "IPTSERVER-GUARD") == [
            f"{guard} -i ing0 -p udp -m udp --dport 53 {to_limits}",
            f"{guard} -i xuk -p udp -m udp --dport 53 {to_limits}",
            f"{guard} {to} -p udp -m udp --dport {port} {to_limits}",
            *(  # 0.0.0.0: any of the host's addresses
                [f"{guard} -p udp -m addrtype --dst-type LOCAL -m udp --dport 5353 {to_limits}"]
                if version == 4
                else []
            ),
        ]
        limit = "-A IPTSERVER-GUARD-L -m hashlimit --hashlimit-above"
        assert rules_of(raw, "IPTSERVER-GUARD-L") == [
            f"{limit} 200/sec --hashlimit-burst 600 --hashlimit-mode srcip "
            f"--hashlimit-name ipts{version}c200 -j DROP",
            f"{limit} 2000/sec --hashlimit-burst 6000 --hashlimit-mode srcip "
            f"--hashlimit-name ipts{version}n2000 --hashlimit-srcmask {mask} -j DROP",
        ]
    unlimited = GUARDED.replace("client: 100, network: 1000", "client: 0, network: 0")
    drive(netns, write_schema(unlimited), "install", 5353)
    for version in (4, 6):
        assert not any("GUARD" in line for line in saved(netns, version, "raw"))


def test_remove_leaves_nothing_and_others_rules_alone(
    netns: str, write_schema: Callable[[str], Path]
) -> None:
    foreign = "-A PREROUTING -i ing0 -j ACCEPT"
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        subprocess.run(
            ["ip", "netns", "exec", netns, tool, "-t", "mangle", *foreign.split()], check=True
        )
    schema = write_schema(SCHEMA + "dns: {block_doh: true}\n")
    drive(netns, schema, "install", 5353)
    drive(netns, schema, "remove")
    after = everything(netns)
    assert not any("IPTSERVER" in line for lines in after.values() for line in lines), after
    assert rules_of(after[4, "mangle"], "PREROUTING") == [foreign]
    assert rules_of(after[6, "mangle"], "PREROUTING") == [foreign]
    drive(netns, schema, "remove")  # nothing left to remove: fine
    assert everything(netns) == after
