"""Exit state changes POSTed as JSON to the operator's webhook (``health.webhook``).

Fire and forget: a slow or dead webhook is logged and never delays routing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

TIMEOUT = 3.0  # seconds for the whole POST


class Webhook:
    def __init__(self, url: str | None, timeout: float = TIMEOUT) -> None:
        self.url = url  # None: changes are not posted (a reload may set it)
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._posting: set[asyncio.Task[None]] = set()

    def post(self, body: dict[str, Any]) -> None:
        """Start POSTing ``body``; returns at once."""
        if self.url is None:
            return
        task = asyncio.create_task(self._post(self.url, body))
        self._posting.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._posting.discard)

    async def _post(self, url: str, body: dict[str, Any]) -> None:
        # Imported at the first post: aiohttp costs 11 MB of RSS, webhooks are rare.
        import aiohttp

        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self._timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            async with self._session.post(url, json=body) as response:
                if response.status >= 300:
                    log.warning(
                        "webhook %s answered %d to the change of exit %s to %s",
                        url,
                        response.status,
                        body.get("exit"),
                        body.get("state"),
                    )
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning(
                "webhook %s: cannot post the change of exit %s to %s: %s",
                url,
                body.get("exit"),
                body.get("state"),
                str(e) or type(e).__name__,
            )

    async def close(self) -> None:
        """Let posts under way finish (each is bounded by the timeout), then close."""
        if self._posting:
            await asyncio.gather(*self._posting, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
