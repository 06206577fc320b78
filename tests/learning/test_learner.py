"""The Learner between the policy and the kernel's writer (the writer records here; the
real kernel is in tests/dataplane and tests/e2e)."""

from __future__ import annotations

import asyncio
import ipaddress

from iptserver.dataplane.plan import LearnedEntry, plan
from iptserver.learning import HOLD_MARGIN, Learner, State
from iptserver.policy import Policy
from iptserver.schema import parse_schema

SCHEMA = """
exits:
  uk: {interface: wg-uk}
rules:
  - exit: uk
    domains: [bbc.co.uk]
ttl: {hold: 120}
"""

ADDRESS = ipaddress.ip_address("198.51.100.7")


def state(text: str = SCHEMA) -> State:
    loaded = parse_schema(text, "learner.yaml")
    return State(Policy(loaded.schema), plan(loaded.schema, {}), loaded)


class Writer:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[list[LearnedEntry]] = []

    async def apply(self, entries: list[LearnedEntry]) -> None:
        await asyncio.sleep(self.delay)
        self.batches.append(list(entries))


def test_an_answer_is_written_once_then_repeats_are_capped_until_a_reload() -> None:
    writer = Writer()
    learner = Learner(state(), writer.apply)

    async def main() -> list[int]:
        ttls = [await learner.learn(["www.bbc.co.uk"], [ADDRESS], 3600) for _ in range(2)]
        learner.state = state(SCHEMA.replace("hold: 120", "hold: 90"))
        ttls.append(await learner.learn(["www.bbc.co.uk"], [ADDRESS], 3600))
        return ttls

    first, repeat, after_reload = asyncio.run(main())
    assert first == 120
    assert 120 - 2 <= repeat <= 120  # what is left of the entry's hold
    assert after_reload == 90
    assert [[e.timeout for e in batch] for batch in writer.batches] == [
        [120 + HOLD_MARGIN],
        [90 + HOLD_MARGIN],
    ]
    assert learner.learned == {"uk": 3}
    assert learner.learned_by("ipts-d0-4", 4, int(ADDRESS)) == (("www.bbc.co.uk",), 0)


def test_immediate_writes_never_overtake_answers_still_on_their_way() -> None:
    writer = Writer(delay=0.05)
    immediate: list[list[LearnedEntry]] = []

    def apply_now(entries: list[LearnedEntry]) -> bool:
        immediate.append(list(entries))
        return True

    learner = Learner(state(), writer.apply, apply_now=apply_now)

    async def main() -> None:
        slow = learner.route(["www.bbc.co.uk"], [ADDRESS], 60)
        pending = asyncio.create_task(learner.write(slow))
        await asyncio.sleep(0)  # the batcher is writing
        other = learner.route(["news.bbc.co.uk"], [ipaddress.ip_address("198.51.100.8")], 60)
        assert not learner.write_now([other])
        await pending
        assert learner.write_now([other])

    asyncio.run(main())
    assert [str(e.network) for batch in writer.batches for e in batch] == ["198.51.100.7/32"]
    assert [str(e.network) for batch in immediate for e in batch] == ["198.51.100.8/32"]


def test_an_answer_without_domain_decisions_writes_nothing() -> None:
    writer = Writer()
    learner = Learner(state(), writer.apply)
    routed = learner.route(["example.org"], [ADDRESS], 3600)
    assert not routed.pending and routed.entries == []
    assert routed.ttl == 120
    assert [d.exit for _, d in learner.recent] == [None]


def test_answers_of_one_loop_turn_share_one_immediate_write() -> None:
    writer = Writer()
    immediate: list[list[LearnedEntry]] = []

    def apply_now(entries: list[LearnedEntry]) -> bool:
        immediate.append(list(entries))
        return True

    learner = Learner(state(), writer.apply, apply_now=apply_now)

    async def main() -> list[int]:
        return await asyncio.gather(
            *(
                learner.learn([f"h{i}.bbc.co.uk"], [ipaddress.ip_address(f"198.51.100.{i}")], 60)
                for i in range(1, 6)
            )
        )

    assert asyncio.run(main()) == [60] * 5
    assert [len(batch) for batch in immediate] == [5]
    assert writer.batches == []
    assert learner.learned == {"uk": 5}
