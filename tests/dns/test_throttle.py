"""Per-query log lines: one of a kind per interval at its level, the rest at DEBUG."""

from __future__ import annotations

import logging

import pytest

from iptserver.dns.throttle import LogThrottle, ThrottledLog, suppressed

LOGGER = "iptserver.test.throttle"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_kind_per_interval_and_the_count_held_back() -> None:
    clock = Clock()
    throttle = LogThrottle(interval=10.0, clock=clock)
    assert throttle.allow("a") == 0
    assert throttle.allow("a") is None
    assert throttle.allow("b") == 0  # kinds are apart
    clock.now += 9.9
    assert throttle.allow("a") is None
    clock.now += 0.1
    assert throttle.allow("a") == 2
    assert throttle.allow("a") is None


@pytest.mark.parametrize(
    ("count", "text"), [(0, ""), (3, " (3 similar suppressed)")], ids=["none", "some"]
)
def test_suppressed(count: int, text: str) -> None:
    assert suppressed(count) == text


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, bool]]:
    return [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records]


@pytest.mark.parametrize(
    ("method", "level"),
    [("warning", logging.WARNING), ("info", logging.INFO)],
    ids=["warning", "info"],
)
def test_throttled_log(method: str, level: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = Clock()
    log = ThrottledLog(logging.getLogger(LOGGER), LogThrottle(interval=10.0, clock=clock))
    say = getattr(log, method)
    say("kind", "query %s failed", "one")
    say("kind", "query %s failed", "two")
    clock.now += 10
    say("kind", "query %s failed", "three")
    assert records(caplog) == [
        (level, "query one failed", False),
        (logging.DEBUG, "query two failed", False),
        (level, "query three failed (1 similar suppressed)", False),
    ]


def test_throttled_error_carries_the_traceback_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    log = ThrottledLog(logging.getLogger(LOGGER))
    error = RuntimeError("boom")
    log.error("bug", "it broke on %s", "a", exc_info=error)
    log.error("bug", "it broke on %s", "b", exc_info=error)
    assert records(caplog) == [
        (logging.ERROR, "it broke on a", True),
        (logging.DEBUG, "it broke on b", False),
    ]
