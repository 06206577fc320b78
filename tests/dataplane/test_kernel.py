"""The dataplane against the real kernel, in a namespace of its own."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SCHEMA = """
exits:
  uk: {interface: xuk}
  ru: {interface: xru}
  gone: {interface: xgone}
  direct: {interface: _DEFAULT}
default: uk
ingress: [ing0]
mesh: [10.77.0.0/16]
rules:
  - {exit: ru, domains: [ru], countries: [RU], nets: [203.0.113.0/24]}
  - {exit: uk, nets: [203.0.113.0/24, 198.51.100.128/25], weight: 5}
  - {exit: direct, nets: ['2001:db8:ff::/48'], weight: 5}
  - {exit: gone, nets: [192.0.2.0/24]}
"""


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def apply(netns: str, schema: Path, mmdb: Path, times: int, end: str) -> list[str]:
    result = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            "-m",
            "tests.dataplane.apply",
            str(schema),
            str(mmdb),
            str(times),
            end,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    problems: list[str] = json.loads(result.stdout)["problems"]
    return problems


def _without_comments(text: str) -> str:
    """iptables-save output without its timestamps and packet counters."""
    lines = (re.sub(r"\[\d+:\d+\]", "", line) for line in text.splitlines())
    return "\n".join(line for line in lines if not line.startswith("#"))


def _sets(text: str) -> str:
    """``ipset save`` without the per-set hash seed, which a swap changes."""
    return "\n".join(
        sorted(re.sub(r" initval 0x[0-9a-f]+", "", line) for line in text.splitlines())
    )


def state(netns: str) -> dict[str, str]:
    run = ["ip", "netns", "exec", netns]
    return {
        "rules4": sh(*run, "ip", "rule"),
        "rules6": sh(*run, "ip", "-6", "rule"),
        "mangle4": _without_comments(sh(*run, "iptables-legacy-save", "-t", "mangle")),
        "mangle6": _without_comments(sh(*run, "ip6tables-legacy-save", "-t", "mangle")),
        "nat4": _without_comments(sh(*run, "iptables-legacy-save", "-t", "nat")),
        "sets": _sets(sh(*run, "ipset", "save")),
        "routes": "".join(
            sh(*run, "ip", f"-{v}", "route", "show", "table", table)
            for v in (4, 6)
            for table in ("100", "101")
        ),
    }


def test_apply_is_idempotent_and_stop_removes_everything(
    netns: str,
    write_schema,
    lab_mmdb: Path,  # type: ignore[no-untyped-def]
) -> None:
    schema = write_schema(SCHEMA)
    problems = apply(netns, schema, lab_mmdb, times=1, end="stay")
    assert problems == [
        "exit gone: interface xgone does not exist; its traffic is dropped until it is up"
    ]
    once = state(netns)
    apply(netns, schema, lab_mmdb, times=2, end="stay")
    assert state(netns) == once  # a restart or reload adds nothing twice

    # One rule per exit and family: fwmark -> its table (the host gateway's too: copies
    # of main's default routes).
    assert once["rules4"].count("fwmark 0x100 lookup 100") == 1
    assert once["rules4"].count("fwmark 0x101 lookup 101") == 1
    assert once["rules4"].count("fwmark 0x103 lookup 103") == 1
    assert once["rules6"].count("fwmark 0x101 lookup 101") == 1
    assert once["routes"].count("default dev xuk") == 2  # IPv4 and IPv6, table 100
    assert once["routes"].count("default dev xru") == 2
    # Sets: weight 5 before weight 0, learned before static, private first.
    mangle = once["mangle4"]
    order = [
        mangle.index(f"--match-set {name} dst -j SET")
        for name in ("ipts-d5-4", "ipts-n5-4", "ipts-d0-4", "ipts-n0-4")
    ]
    assert order == sorted(order)
    assert mangle.index("ipts-private-4 dst -j RETURN") < order[0]
    assert "-A PREROUTING -i ing0 -j IPTSERVER" in mangle
    assert mangle.count("-j IPTSERVER") == 1
    assert "--set-xmark 0x100/0xffffffff" in mangle  # the default exit, uk
    assert "-A IPTSERVER-DNS -p udp -m udp --dport 53 -j REDIRECT --to-ports 5353" in once["nat4"]
    # The same prefix in two rules of one weight: the first rule's exit (ru, 0x101).
    sets = once["sets"]
    assert "add ipts-n0-4 203.0.113.0/24 skbmark 0x101" in sets  # weight 0: rule 0 (ru)
    assert "add ipts-n5-4 203.0.113.0/24 skbmark 0x100" in sets  # weight 5: uk
    assert "add ipts-n0-4 198.51.100.64/26 skbmark 0x101" in sets  # RU, lab GeoIP database
    assert "10.77.0.0/16" in sets  # mesh, never diverted

    apply(netns, schema, lab_mmdb, times=1, end="stop")
    after = state(netns)
    assert "fwmark" not in after["rules4"] + after["rules6"]
    assert "IPTSERVER" not in after["mangle4"] + after["mangle6"] + after["nat4"]
    assert "ipts-" not in after["sets"]
    assert after["routes"] == ""


def test_keep_state_leaves_the_kernel_as_it_was(
    netns: str,
    write_schema,
    lab_mmdb: Path,  # type: ignore[no-untyped-def]
) -> None:
    schema = write_schema(SCHEMA)
    apply(netns, schema, lab_mmdb, times=1, end="stay")
    before = state(netns)
    apply(netns, schema, lab_mmdb, times=1, end="keep")
    assert state(netns) == before


def test_a_second_plan_in_one_process_replaces_the_first(
    netns: str,
    write_schema,
    lab_mmdb: Path,  # type: ignore[no-untyped-def]
) -> None:
    """A reload: fewer rules, another weight, one exit gone; the kernel follows."""
    first = write_schema(SCHEMA)
    second = write_schema(
        "exits:\n  uk: {interface: xuk}\n  ru: {interface: xru}\ningress: [ing0]\n"
        "rules:\n  - {exit: ru, nets: [203.0.113.0/24], weight: 7}\n"
    )
    apply(netns, Path(f"{first},{second}"), lab_mmdb, times=1, end="stay")
    after = state(netns)
    assert "ipts-n7-4" in after["sets"]
    assert "ipts-n5-4" not in after["sets"] and "ipts-n0-4" not in after["sets"]
    assert "add ipts-n7-4 203.0.113.0/24 skbmark 0x101" in after["sets"]
    assert "fwmark 0x103" not in after["rules4"]  # the direct exit is gone
    assert after["mangle4"].count("-j SET --map-set") == 2  # learned + static, weight 7
    assert "--set-xmark" not in after["mangle4"]  # no default exit any more


def test_learned_sets_are_made_for_kernel_max_learned_entries(
    netns: str,
    write_schema,
    lab_mmdb: Path,  # type: ignore[no-untyped-def]
) -> None:
    """``kernel.max_learned`` sizes the learned sets; the static ones fit their networks."""
    schema = write_schema(SCHEMA + "kernel: {max_learned: 5000}\n")
    apply(netns, schema, lab_mmdb, times=1, end="stay")
    created = [line for line in state(netns)["sets"].splitlines() if line.startswith("create")]
    learned = [line for line in created if line.startswith("create ipts-d")]
    assert learned and all("maxelem 5000 " in line for line in learned), learned
    assert all("maxelem 5000 " not in line for line in created if line not in learned)
    apply(netns, schema, lab_mmdb, times=1, end="stop")
