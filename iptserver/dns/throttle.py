"""Keep per-query log lines from flooding the log when something fails for every query."""

from __future__ import annotations

import logging
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


class ThrottledLog:
    """A logger for lines that could come once per query: one line of a kind per
    interval at its own level (saying how many were held back), the rest at DEBUG."""

    def __init__(self, logger: logging.Logger, throttle: LogThrottle | None = None) -> None:
        self._logger = logger
        self._throttle = LogThrottle() if throttle is None else throttle

    def warning(self, kind: str, message: str, *args: object) -> None:
        self._log(logging.WARNING, kind, message, args)

    def info(self, kind: str, message: str, *args: object) -> None:
        self._log(logging.INFO, kind, message, args)

    def error(self, kind: str, message: str, *args: object, exc_info: BaseException) -> None:
        """ERROR with the traceback of ``exc_info`` (held-back lines: DEBUG, no traceback)."""
        self._log(logging.ERROR, kind, message, args, exc_info)

    def _log(
        self,
        level: int,
        kind: str,
        message: str,
        args: tuple[object, ...],
        exc_info: BaseException | None = None,
    ) -> None:
        if (count := self._throttle.allow(kind)) is not None:
            self._logger.log(level, message + "%s", *args, suppressed(count), exc_info=exc_info)
        else:
            self._logger.debug(message, *args)
