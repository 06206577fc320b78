"""What the kernel of the lab's entry namespace holds, read with the operator's tools.

The end-to-end tests prove routing from the outside; these readings are for the other
half of the lifecycle contract (DESIGN §4): a restart adds nothing twice, and a plain stop
leaves the namespace as it was before iptserver started. They also let a test's teardown
put the namespace back when a daemon did not, so the next test starts fresh.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

from iptserver.lab import Lab

# section -> the command that shows it (run inside the entry namespace)
SECTIONS: Mapping[str, Sequence[str]] = {
    "ip -4 rule": ("ip", "-4", "rule", "show"),
    "ip -6 rule": ("ip", "-6", "rule", "show"),
    "ip -4 route": ("ip", "-4", "route", "show", "table", "all"),
    "ip -6 route": ("ip", "-6", "route", "show", "table", "all"),
    "iptables mangle": ("iptables-legacy-save", "-t", "mangle"),
    "ip6tables mangle": ("ip6tables-legacy-save", "-t", "mangle"),
    "iptables nat": ("iptables-legacy-save", "-t", "nat"),
    "ip6tables nat": ("ip6tables-legacy-save", "-t", "nat"),
    "ipsets": ("ipset", "list", "-n"),
}
# python-iptables writes through libiptc, so iptserver's chains live in the legacy tables
# (the lab's own MASQUERADE rules are in the nf_tables ones and are not shown here).
OUR_CHAINS = ("IPTSERVER", "IPTSERVER-DNS")
SET_PREFIX = "ipts-"

EntryState = dict[str, list[str]]


def _normalized(line: str) -> str:
    """Without iptables-save's packet counters, which change with traffic."""
    return re.sub(r"\s*\[\d+:\d+\]", "", line).rstrip()


def entry_state(lab: Lab) -> EntryState:
    """Every section's lines (comments and counters dropped)."""
    state = {}
    for section, argv in SECTIONS.items():
        out = lab.run("entry", argv).stdout
        state[section] = [
            _normalized(line) for line in out.splitlines() if line.strip() and line[0] != "#"
        ]
    return state


def _is_ours(section: str, line: str) -> bool:
    if section.endswith("rule"):
        return "fwmark" in line
    if section.endswith("route"):  # the lab's routes are all in main or local
        return re.search(r"\btable (?!local\b)\S+", line) is not None
    if section == "ipsets":
        return line.startswith(SET_PREFIX)
    return any(re.search(rf"\b{re.escape(chain)}\b", line) for chain in OUR_CHAINS)


def ours(state: EntryState) -> list[str]:
    """The lines that show something of iptserver's: fwmark rules, exit tables, our
    chains and the jumps into them, our sets."""
    return [f"{s}: {line}" for s, lines in state.items() for line in lines if _is_ours(s, line)]


def differences(before: EntryState, after: EntryState) -> list[str]:
    """Lines added or removed between two readings, per section."""
    found = []
    for section in SECTIONS:
        old, new = Counter(before.get(section, [])), Counter(after.get(section, []))
        found += [f"{section}: + {line}" for line in (new - old).elements()]
        found += [f"{section}: - {line}" for line in (old - new).elements()]
    return found


def scrub(lab: Lab) -> None:
    """Remove whatever of iptserver's is left in the entry namespace (a failed test's)."""
    state = entry_state(lab)
    for version in ("4", "6"):
        for line in state[f"ip -{version} rule"]:
            if "fwmark" in line:
                priority = line.split(":", 1)[0]
                delete = ["ip", f"-{version}", "rule", "del", "pref", priority]
                lab.run("entry", delete, check=False)
        tables = {
            m.group(1)
            for line in state[f"ip -{version} route"]
            if (m := re.search(r"\btable (?!local\b)(\S+)", line))
        }
        for table in tables:
            lab.run("entry", ["ip", f"-{version}", "route", "flush", "table", table], check=False)
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        for table, chain in (("mangle", "IPTSERVER"), ("nat", "IPTSERVER-DNS")):
            listed = lab.run("entry", [tool, "-w", "-t", table, "-S", "PREROUTING"]).stdout
            rules = [line for line in listed.splitlines() if line.startswith("-A ")]
            jumps = [n for n, rule in enumerate(rules, 1) if rule.endswith(f"-j {chain}")]
            for number in reversed(jumps):  # by number: ip6tables finds not our rules by spec
                lab.run("entry", [tool, "-w", "-t", table, "-D", "PREROUTING", str(number)])
            lab.run("entry", [tool, "-w", "-t", table, "-F", chain], check=False)
            lab.run("entry", [tool, "-w", "-t", table, "-X", chain], check=False)
    for name in state["ipsets"]:
        if name.startswith(SET_PREFIX):
            lab.run("entry", ["ipset", "destroy", name], check=False)


def restore(lab: Lab, pristine: EntryState) -> list[str]:
    """Compare the entry with how it was before any iptserver ran; put it back if it
    differs. Returns what differed (nothing: the daemons cleaned up after themselves)."""
    found = differences(pristine, entry_state(lab))
    if found:
        scrub(lab)
        still = differences(pristine, entry_state(lab))
        found += [f"(could not remove) {line}" for line in still]
    return found
