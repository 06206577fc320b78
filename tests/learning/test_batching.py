"""Router pieces that need no kernel: the timer that expires exported host routes."""

from __future__ import annotations

import asyncio

from iptserver.errors import DataplaneError
from iptserver.learning.batching import ExpiryTimer


def test_the_timer_sweeps_at_each_deadline_the_sweep_names() -> None:
    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadlines = [start + 0.05, start + 0.10]  # what the table holds
        swept: list[float] = []
        done = asyncio.Event()

        async def sweep() -> float | None:
            now = loop.time()
            swept.append(now - start)
            while deadlines and deadlines[0] <= now:
                deadlines.pop(0)
            if not deadlines:
                done.set()
                return None
            return deadlines[0]

        timer = ExpiryTimer(sweep)
        timer.wake_by(start + 0.05)
        await asyncio.wait_for(done.wait(), 5)
        timer.close()
        return swept

    swept = asyncio.run(scenario())
    assert len(swept) == 2
    assert swept[0] >= 0.05 and swept[1] >= 0.10


def test_an_earlier_deadline_moves_the_timer_up_and_a_later_one_does_not() -> None:
    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        swept: list[float] = []
        first = asyncio.Event()

        async def sweep() -> float | None:
            swept.append(loop.time() - start)
            first.set()
            return None

        timer = ExpiryTimer(sweep)
        timer.wake_by(start + 60)
        timer.wake_by(start + 0.02)
        timer.wake_by(start + 30)
        await asyncio.wait_for(first.wait(), 5)
        await asyncio.sleep(0.05)
        timer.close()
        return swept

    assert len(asyncio.run(scenario())) == 1


def test_a_sweep_the_kernel_refuses_is_retried() -> None:
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        calls = 0
        done = asyncio.Event()

        async def sweep() -> float | None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise DataplaneError("export table 4242: cannot delete the route")
            done.set()
            return None

        timer = ExpiryTimer(sweep)
        timer.RETRY = 0.01
        timer.wake_by(loop.time())
        await asyncio.wait_for(done.wait(), 5)
        timer.close()
        return calls

    assert asyncio.run(scenario()) == 2


def test_each_answer_learns_which_of_its_own_routes_were_newly_exported() -> None:
    import ipaddress

    from iptserver.dataplane.plan import LearnedEntry
    from iptserver.learning.batching import Batcher

    def learned(ip: str) -> LearnedEntry:
        return LearnedEntry("ipts-d0-4", ipaddress.ip_network(ip), 0x100, 60)

    async def apply(entries: list[LearnedEntry]) -> frozenset[ipaddress.IPv4Network]:
        await asyncio.sleep(0.01)  # answers pile up meanwhile and share the next call
        return frozenset(ipaddress.IPv4Network(n) for n in ("203.0.113.1/32", "203.0.113.3/32"))

    async def scenario() -> list[frozenset[object]]:
        batcher = Batcher(apply)
        return list(
            await asyncio.gather(
                batcher.submit([learned("203.0.113.1")]),
                batcher.submit([learned("203.0.113.2")]),
                batcher.submit([learned("203.0.113.3"), learned("203.0.113.4")]),
            )
        )

    first, second, third = asyncio.run(scenario())
    assert first == {ipaddress.ip_network("203.0.113.1/32")}
    assert second == frozenset()
    assert third == {ipaddress.ip_network("203.0.113.3/32")}
