"""The child that lists learned sets for /v1/routes, against sets made with the ``ipset``
tool in a namespace of the test's own."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys

from tests.conftest import REPO
from tests.dataplane.conftest import ipset_restore


def sh(netns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=60,
    )


def listing(netns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return sh(netns, sys.executable, "-m", "iptserver.dataplane.listing", *argv)


def make_sets(netns: str) -> None:
    ipset_restore(
        netns,
        [
            "create t-d10-4 hash:net family inet timeout 0 skbinfo",
            "create t-d0-4 hash:net family inet timeout 0 skbinfo",
            "create t-d0-6 hash:net family inet6 timeout 0 skbinfo",
            "add t-d10-4 198.51.100.9 timeout 300 skbmark 0x101",
            "add t-d0-4 203.0.113.20 timeout 200 skbmark 0x100",
            "add t-d0-4 203.0.113.3 timeout 100 skbmark 0x101",
            "add t-d0-4 198.51.100.0/24 timeout 0 skbmark 0x100",
            "add t-d0-6 2001:db8::7 timeout 300 skbmark 0x100",
        ],
    )


def rows(text: str) -> list[tuple[str, str, str, str]]:
    """(weight, set, net, mark) of each line; the timeouts only checked to be counts."""
    found = []
    for line in text.splitlines():
        weight, name, version, address, cidr, mark, timeout = line.split()
        assert timeout.isdigit()
        kind = ipaddress.IPv4Network if version == "4" else ipaddress.IPv6Network
        net = kind((int(address), int(cidr)))
        found.append((weight, name, str(net), mark))
    return found


def test_sets_come_in_the_order_given_each_sorted_by_address(netns: str) -> None:
    make_sets(netns)
    done = listing(netns, "10:t-d10-4", "0:t-d0-4", "0:t-d0-6")
    assert done.returncode == 0, done.stderr
    assert rows(done.stdout) == [
        ("10", "t-d10-4", "198.51.100.9/32", str(0x101)),
        ("0", "t-d0-4", "198.51.100.0/24", str(0x100)),
        ("0", "t-d0-4", "203.0.113.3/32", str(0x101)),
        ("0", "t-d0-4", "203.0.113.20/32", str(0x100)),
        ("0", "t-d0-6", "2001:db8::7/128", str(0x100)),
    ]


def test_filters_by_covered_address_and_by_mark(netns: str) -> None:
    make_sets(netns)
    sets = ("10:t-d10-4", "0:t-d0-4", "0:t-d0-6")
    covering = listing(netns, *sets, "--ip", "198.51.100.9")
    assert [r[2] for r in rows(covering.stdout)] == ["198.51.100.9/32", "198.51.100.0/24"]
    by_mark = listing(netns, *sets, "--marks", str(0x101))
    assert [r[2] for r in rows(by_mark.stdout)] == ["198.51.100.9/32", "203.0.113.3/32"]
    assert listing(netns, *sets, "--ip", "2001:db8::8").stdout == ""


def test_a_missing_set_is_an_error_that_names_it(netns: str) -> None:
    done = listing(netns, "0:t-nowhere-4")
    assert done.returncode == 1
    assert "cannot list ipset t-nowhere-4" in done.stderr
    assert "Traceback" not in done.stderr


def test_json_lines_for_v1_routes_name_the_exit_by_mark(netns: str) -> None:
    make_sets(netns)
    done = listing(netns, "10:t-d10-4", "0:t-d0-6", "--json", f"{0x100}=uk,{0x101}=ru")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(" ", 3)[:3] for line in lines] == [
        ["t-d10-4", "4", str(int(ipaddress.ip_address("198.51.100.9")))],
        ["t-d0-6", "6", str(int(ipaddress.ip_address("2001:db8::7")))],
    ]
    first = json.loads(lines[0].split(" ", 3)[3] + '"rule": null, "names": []}')
    assert first["net"] == "198.51.100.9/32"
    assert (first["kind"], first["exit"], first["weight"]) == ("learned", "ru", 10)
    assert 0 < first["expires_in"] <= 300
