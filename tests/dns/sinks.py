"""A recording AnswerSink: our own interface, so a test double is honest here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from iptserver.errors import DataplaneError, SetFullError
from iptserver.schema.values import IPAddress


@dataclass(frozen=True)
class LearnCall:
    names: tuple[str, ...]
    addresses: tuple[IPAddress, ...]
    ttl: int
    started: float  # time.monotonic() when learn was called
    finished: float  # and when it returned its cap


@dataclass
class RecordingSink:
    """Records each learn; answers ``cap`` after ``delay`` seconds, or fails if told to."""

    cap: int = 3600
    delay: float = 0.0
    fail: bool = False
    crash: bool = False  # raise something that is not a DataplaneError (a bug in the sink)
    full: bool = False  # raise the kernel's "set full" (as IPSets does)
    before_return: Callable[[], None] | None = None  # runs just before learn returns
    calls: list[LearnCall] = field(default_factory=list)
    started: list[tuple[str, ...]] = field(default_factory=list)

    async def learn(
        self,
        names: Sequence[str],
        addresses: Sequence[IPAddress],
        ttl: int,
        client: str | None = None,
    ) -> int:
        started = time.monotonic()
        self.started.append(tuple(names))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise DataplaneError("ipset add learned-4 198.51.100.10: test failure")
        if self.crash:
            raise RuntimeError("a bug in the sink")
        if self.full:
            raise SetFullError("ipset ipts-d0-4 is full: ... (kernel.max_learned)")
        if self.before_return is not None:
            self.before_return()
        self.calls.append(LearnCall(tuple(names), tuple(addresses), ttl, started, time.monotonic()))
        return self.cap

    def addresses(self) -> set[str]:
        return {str(a) for call in self.calls for a in call.addresses}
