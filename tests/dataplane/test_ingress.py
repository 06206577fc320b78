"""Several ingress interfaces: each hooked once, and all unhooked again (real kernel)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.dataplane.test_kernel import apply, sh

SCHEMA = """
exits:
  uk: {interface: xuk}
ingress: [INGRESS]
rules:
  - {exit: uk, domains: [co.uk]}
"""


def jumps(netns: str) -> list[str]:
    """The -i interfaces of the jumps into iptserver's chains (mangle and nat, IPv4)."""
    found = []
    for table in ("mangle", "nat"):
        text = sh("ip", "netns", "exec", netns, "iptables-legacy-save", "-t", table)
        found += [
            f"{table} {line.split()[3]}"
            for line in text.splitlines()
            if line.startswith("-A PREROUTING -i ") and "IPTSERVER" in line
        ]
    return sorted(found)


def test_two_ingress_interfaces_are_hooked_and_removed(
    netns: str, lab_mmdb: Path, write_schema: Callable[[str], Path]
) -> None:
    both = write_schema(SCHEMA.replace("INGRESS", "ing0, xru"))
    assert apply(netns, str(both), lab_mmdb, 2, "stay") == []
    assert jumps(netns) == ["mangle ing0", "mangle xru", "nat ing0", "nat xru"]
    # A reload that drops both interfaces, and a stop, each unhook two jumps per chain.
    none = write_schema(SCHEMA.replace("INGRESS", ""))
    assert apply(netns, f"{both},{none}", lab_mmdb, 1, "stay") == []
    assert jumps(netns) == []
    assert apply(netns, str(both), lab_mmdb, 1, "stop") == []
    assert jumps(netns) == []
