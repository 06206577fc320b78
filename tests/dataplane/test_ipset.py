"""ipsets over netlink against the real kernel, in a namespace of the test's own: sets
made, filled in batches, read back, swapped and destroyed, and the kernel's refusals
as DataplaneErrors naming the set."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable
from typing import TypeVar

import pytest

from iptserver.dataplane.ipset import BATCH, Entry, IPSets, entries_of
from iptserver.errors import DataplaneError, SetFullError
from iptserver.lab.netns import run_in

T = TypeVar("T")
net = ipaddress.ip_network


def with_sets(netns: str, work: Callable[[IPSets], T]) -> T:
    """``work(sets)`` with an ``IPSets`` made, used and closed inside ``netns``."""

    def inside() -> T:
        sets = IPSets()
        try:
            return work(sets)
        finally:
            sets.close()

    return run_in(netns, inside)


def ipset_save(netns: str) -> str:
    """What the ``ipset`` tool sees (an independent reading of the kernel)."""
    return subprocess.run(
        ["ip", "netns", "exec", netns, "ipset", "save"], capture_output=True, text=True, check=True
    ).stdout


def test_a_learned_set_holds_marks_and_timeouts(netns: str) -> None:
    batch = [
        Entry(net("203.0.113.7/32"), mark=0x100, timeout=300),
        Entry(net("198.51.100.0/24"), mark=0x101, timeout=0),
    ]

    def work(sets: IPSets) -> tuple[list[Entry], int, bool]:
        sets.create("t-d0-4", 4, timeout=True, skbinfo=True)
        sets.add("t-d0-4", batch)
        return sets.entries("t-d0-4"), sets.size("t-d0-4"), sets.exists("t-d0-4")

    entries, size, exists = with_sets(netns, work)
    assert exists and size == 2
    by_net = {e.network: e for e in entries}
    assert by_net[net("198.51.100.0/24")] == Entry(net("198.51.100.0/24"), 0x101, 0)
    learned = by_net[net("203.0.113.7/32")]
    assert learned.mark == 0x100
    assert learned.timeout is not None and 295 <= learned.timeout <= 300  # seconds left
    saved = ipset_save(netns)
    assert "create t-d0-4 hash:net family inet" in saved
    assert "timeout 0 skbinfo" in saved
    assert "add t-d0-4 198.51.100.0/24 timeout 0 skbmark 0x101" in saved


def test_a_static_set_of_each_family_without_timeouts(netns: str) -> None:
    def work(sets: IPSets) -> tuple[list[Entry], list[Entry]]:
        sets.create("t-n0-4", 4, timeout=False, skbinfo=True)
        sets.create("t-private-6", 6, timeout=False, skbinfo=False)
        sets.add("t-n0-4", entries_of([(net("10.0.0.0/8"), 0x102)], None))
        sets.add("t-private-6", [Entry(net("fd00::/8")), Entry(net("2001:db8::1/128"))])
        return sets.entries("t-n0-4"), sets.entries("t-private-6")

    static, private = with_sets(netns, work)
    assert static == [Entry(net("10.0.0.0/8"), mark=0x102)]
    assert sorted(private, key=str) == [Entry(net("2001:db8::1/128")), Entry(net("fd00::/8"))]
    saved = ipset_save(netns)
    assert "create t-private-6 hash:net family inet6" in saved
    assert "add t-private-6 fd00::/8" in saved


def test_more_entries_than_one_message_carries(netns: str) -> None:
    count = 2 * BATCH + 500
    hosts = [ipaddress.ip_network((0x0A000000 + n, 32)) for n in range(count)]

    def work(sets: IPSets) -> tuple[int, int]:
        sets.create("t-d0-4", 4, timeout=True, skbinfo=True)
        sets.add("t-d0-4", [Entry(h, 0x100, 60) for h in hosts])
        return sets.size("t-d0-4"), len(sets.entries("t-d0-4"))

    assert with_sets(netns, work) == (count, count)
    saved = ipset_save(netns)
    assert f"add t-d0-4 {hosts[0].network_address} timeout" in saved
    assert f"add t-d0-4 {hosts[-1].network_address} timeout" in saved


def test_adding_again_refreshes_the_mark_and_timeout(netns: str) -> None:
    def work(sets: IPSets) -> list[Entry]:
        sets.create("t-d0-4", 4, timeout=True, skbinfo=True)
        sets.add("t-d0-4", [Entry(net("203.0.113.7/32"), 0x100, 10)])
        sets.add("t-d0-4", [Entry(net("203.0.113.7/32"), 0x101, 500)])
        return sets.entries("t-d0-4")

    [entry] = with_sets(netns, work)
    assert entry.mark == 0x101
    assert entry.timeout is not None and entry.timeout > 400


def test_delete_flush_and_a_missing_entry(netns: str) -> None:
    def work(sets: IPSets) -> tuple[list[Entry], int]:
        sets.create("t-n0-4", 4, timeout=False, skbinfo=False)
        sets.add("t-n0-4", [Entry(net("10.1.0.0/16")), Entry(net("10.2.0.0/16"))])
        sets.delete("t-n0-4", [Entry(net("10.1.0.0/16"), 0x100, 5)])  # mark/timeout ignored
        sets.delete("t-n0-4", [Entry(net("10.9.0.0/16"))])  # not there: no error
        left = sets.entries("t-n0-4")
        sets.flush("t-n0-4")
        return left, sets.size("t-n0-4")

    assert with_sets(netns, work) == ([Entry(net("10.2.0.0/16"))], 0)


def test_swap_and_destroy(netns: str) -> None:
    def work(sets: IPSets) -> tuple[list[Entry], list[Entry], list[str]]:
        sets.create("t-n0-4", 4, timeout=False, skbinfo=False)
        sets.create("t-new-n0-4", 4, timeout=False, skbinfo=False)
        sets.add("t-n0-4", [Entry(net("10.1.0.0/16"))])
        sets.add("t-new-n0-4", [Entry(net("10.2.0.0/16"))])
        sets.swap("t-new-n0-4", "t-n0-4")
        swapped = (sets.entries("t-n0-4"), sets.entries("t-new-n0-4"))
        sets.destroy("t-new-n0-4")
        sets.destroy("t-new-n0-4")  # already gone: fine
        return *swapped, sets.names()

    live, staging, names = with_sets(netns, work)
    assert live == [Entry(net("10.2.0.0/16"))]
    assert staging == [Entry(net("10.1.0.0/16"))]
    assert names == ["t-n0-4"]
    assert "t-new" not in ipset_save(netns)


def test_names_lists_each_set_once(netns: str) -> None:
    def work(sets: IPSets) -> tuple[list[str], bool]:
        for name in ("t-a", "t-b", "t-c"):
            sets.create(name, 4, timeout=False, skbinfo=False)
        sets.add("t-b", [Entry(ipaddress.ip_network((0x0A000000 + n, 32))) for n in range(3000)])
        return sets.names(), sets.exists("t-nosuch")

    names, exists = with_sets(netns, work)
    assert sorted(names) == ["t-a", "t-b", "t-c"]
    assert not exists


def test_creating_a_set_that_exists_keeps_it_and_its_entries(netns: str) -> None:
    """A restart adopts its sets: create() with another family or other options leaves the
    set that is there as it is (it is not replaced)."""

    def work(sets: IPSets) -> list[Entry]:
        sets.create("t-d0-4", 4, timeout=True, skbinfo=True)
        sets.add("t-d0-4", [Entry(net("10.1.0.0/16"), 0x100, 0)])
        sets.create("t-d0-4", 6, timeout=False, skbinfo=False)
        return sets.entries("t-d0-4")

    assert with_sets(netns, work) == [Entry(net("10.1.0.0/16"), 0x100, 0)]
    assert "create t-d0-4 hash:net family inet " in ipset_save(netns)


def refusal(netns: str, work: Callable[[IPSets], object]) -> str:
    with pytest.raises(DataplaneError) as caught:
        with_sets(netns, work)
    return str(caught.value)


def plain(sets: IPSets) -> IPSets:
    """The sets, holding t-plain: IPv4, no timeouts, no skbinfo."""
    sets.create("t-plain", 4, timeout=False, skbinfo=False)
    return sets


@pytest.mark.parametrize(
    ("work", "message"),
    [
        pytest.param(
            lambda s: s.add("t-nosuch", [Entry(net("10.0.0.1/32"))]),
            "ipset t-nosuch: the kernel refused the entries: No such file or directory",
            id="add-to-missing-set",
        ),
        pytest.param(
            lambda s: plain(s).add("t-plain", [Entry(net("10.0.0.1/32"), None, 5)]),
            "ipset t-plain: the kernel refused the entries: timeout given to a set created "
            "without timeouts",
            id="timeout-without-timeouts",
        ),
        pytest.param(
            lambda s: plain(s).add("t-plain", [Entry(net("10.0.0.1/32"), 0x100)]),
            "ipset t-plain: the kernel refused the entries: skbmark given to a set created "
            "without skbinfo",
            id="mark-without-skbinfo",
        ),
        pytest.param(
            lambda s: plain(s).add("t-plain", [Entry(net("2001:db8::1/128"))]),
            "ipset t-plain: the kernel refused the entries: ",
            id="wrong-family",
        ),
        pytest.param(
            lambda s: s.size("t-nosuch"), "cannot read ipset t-nosuch: ", id="size-of-missing"
        ),
        pytest.param(
            lambda s: s.entries("t-nosuch"),
            "cannot list ipset t-nosuch: ",
            id="entries-of-missing",
        ),
        pytest.param(
            lambda s: s.flush("t-nosuch"), "cannot flush ipset t-nosuch: ", id="flush-missing"
        ),
        pytest.param(
            lambda s: plain(s).swap("t-plain", "t-nosuch"),
            "cannot swap ipsets t-plain and t-nosuch: ",
            id="swap-with-missing",
        ),
        pytest.param(
            lambda s: s.create("t-" + "x" * 40, 4, timeout=False, skbinfo=False),
            "ipset t-xxxxxxxx",
            id="name-too-long",
        ),
    ],
)
def test_refusals_name_the_set(netns: str, work: Callable[[IPSets], object], message: str) -> None:
    assert message in refusal(netns, work)


def test_a_full_set_says_so_in_words(netns: str) -> None:
    """Made for 1,024 entries (kernel.max_learned), the 1,025th is refused: the error
    says the set is full and what to do, not "Unknown error 4352"."""
    entries = entries_of(
        ((net(f"10.{i >> 8}.{i & 255}.1/32"), 0x100) for i in range(1025)), timeout=300
    )

    def work(sets: IPSets) -> tuple[str, int]:
        sets.create("t-full-4", 4, timeout=True, skbinfo=True, maxelem=1024)
        sets.add("t-full-4", entries[:1024])
        with pytest.raises(SetFullError) as full:
            sets.add("t-full-4", entries[1024:])
        return str(full.value), sets.size("t-full-4")

    message, size = with_sets(netns, work)
    assert size == 1024
    assert "ipset t-full-4 is full" in message and "kernel.max_learned" in message
    assert "maxelem 1024" in ipset_save(netns)
