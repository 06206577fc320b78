"""Keep per-query log lines from flooding the log when something fails for every query."""

from __future__ import annotations

import time
from collections.abc import Callable


class LogThrottle:
    """Lets one line per kind through every ``interval`` seconds and counts the others."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, kind: str) -> int | None:
        """None: stay quiet. Else log, and say how many lines of this kind were held back."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._suppressed.pop(kind, 0)


def suppressed(count: int) -> str:
    """A suffix for a log line: `` (N similar lines suppressed)`` or nothing."""
    return f" ({count} similar suppressed)" if count else ""
