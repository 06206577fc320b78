"""The health webhook against a real aiohttp server on 127.0.0.1: what is POSTed, and that
a slow, failing or missing receiver is logged and never raised or waited on by routing."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from iptserver.health.webhook import Webhook

CHANGE = {"exit": "uk", "state": "down", "previous": "up", "routed_by": "us"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Receiver:
    """A webhook receiver: records each POST (path, content type, JSON body)."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.posts: list[tuple[str, str, Any]] = []
        self.got_one = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((request.path, request.content_type, json.loads(await request.read())))
        self.got_one.set()
        await asyncio.sleep(self.delay)
        return web.Response(status=self.status)


@asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[str]:
    """The receiver's URL while it listens on 127.0.0.1 (a free port)."""
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


def test_a_change_is_posted_as_json() -> None:
    async def scenario() -> list[tuple[str, str, Any]]:
        receiver = Receiver()
        async with serving(receiver) as url:
            hook = Webhook(url)
            hook.post(CHANGE)
            hook.post({**CHANGE, "state": "up", "previous": "down"})
            await hook.close()
        return receiver.posts

    posts = asyncio.run(scenario())
    assert sorted(posts, key=lambda p: p[2]["state"]) == [
        ("/hook", "application/json", CHANGE),
        ("/hook", "application/json", {**CHANGE, "state": "up", "previous": "down"}),
    ]


def test_post_returns_at_once_and_close_waits_for_posts_under_way() -> None:
    async def scenario() -> tuple[float, bool, float]:
        receiver = Receiver(delay=0.3)
        async with serving(receiver) as url:
            hook = Webhook(url)
            loop = asyncio.get_running_loop()
            start = loop.time()
            hook.post(CHANGE)
            returned = loop.time() - start
            await asyncio.wait_for(receiver.got_one.wait(), 5)
            seen_before_close = bool(receiver.posts)
            await hook.close()  # the answer is still 0.3 s away: close waits for it
            closed = loop.time() - start
        return returned, seen_before_close, closed

    returned, seen, closed = asyncio.run(scenario())
    assert returned < 0.05
    assert seen
    assert closed >= 0.3


@pytest.mark.parametrize("status", [404, 500], ids=["not-found", "server-error"])
def test_an_error_answer_is_logged_not_raised(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> str:
        async with serving(Receiver(status=status)) as url:
            hook = Webhook(url)
            hook.post(CHANGE)
            await hook.close()
        return url

    with caplog.at_level(logging.WARNING, logger="iptserver.health.webhook"):
        url = asyncio.run(scenario())
    assert f"webhook {url} answered {status} to the change of exit uk to down" in caplog.text


def test_a_receiver_that_is_not_there_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> str:
        async with serving(Receiver()) as url:
            pass  # the port is free again: nothing listens
        hook = Webhook(url)
        hook.post(CHANGE)
        await hook.close()
        return url

    with caplog.at_level(logging.WARNING, logger="iptserver.health.webhook"):
        url = asyncio.run(scenario())
    assert f"webhook {url}: cannot post the change of exit uk to down: " in caplog.text


def slow_post(caplog: pytest.LogCaptureFixture) -> float:
    """Seconds a POST to a receiver that answers after 1.5 s takes with a 0.2 s timeout."""

    async def scenario() -> float:
        async with serving(Receiver(delay=1.5)) as url:
            hook = Webhook(url, timeout=0.2)
            loop = asyncio.get_running_loop()
            start = loop.time()
            hook.post(CHANGE)
            await hook.close()
            return loop.time() - start

    with caplog.at_level(logging.WARNING, logger="iptserver.health.webhook"):
        return asyncio.run(scenario())


def test_a_slow_receiver_is_cut_off_by_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    assert slow_post(caplog) < 1
    assert "cannot post the change of exit uk to down: " in caplog.text


def test_a_timeout_is_named_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    slow_post(caplog)
    assert "cannot post the change of exit uk to down: TimeoutError" in caplog.text


def test_no_url_posts_nothing() -> None:
    async def scenario() -> list[tuple[str, str, Any]]:
        receiver = Receiver()
        async with serving(receiver):
            hook = Webhook(None)
            hook.post(CHANGE)
            await asyncio.sleep(0.1)
            await hook.close()
        return receiver.posts

    assert asyncio.run(scenario()) == []


def test_a_url_set_later_is_used_and_close_can_be_called_again() -> None:
    """A reload may set or change ``url``; close() with nothing posted is harmless."""

    async def scenario() -> list[tuple[str, str, Any]]:
        receiver = Receiver()
        async with serving(receiver) as url:
            hook = Webhook(None)
            await hook.close()
            hook.url = url
            hook.post(CHANGE)
            await hook.close()
            await hook.close()
        return receiver.posts

    assert asyncio.run(scenario()) == [("/hook", "application/json", CHANGE)]
