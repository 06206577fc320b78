"""Keep the schema's lists fresh: download URL lists on their interval, notice local
lists that changed, and reload when one did.

A new copy is parsed and judged (``iptserver.lists.fetch.refusal``) before it is kept;
then the daemon reloads as on SIGHUP, which validates the whole schema again and swaps
the static sets, keeping learned entries and connections. A failed or refused download
keeps the last good copy, says why in the log with the URL, and counts in
``iptserver_list_failures``; it is tried again sooner than the interval (1 min, doubling
up to the interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from iptserver.lists.fetch import FetchError, download, refusal, session
from iptserver.lists.status import ListStatus
from iptserver.lists.store import ListCache, ListRead, ListReader
from iptserver.schema.load import Loaded

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("iptserver.lists")

FIRST_RETRY = 60.0


class ListRefresher:
    def __init__(
        self,
        reader: ListReader,
        base: Path,
        reload: Callable[[], Awaitable[bool]],
    ) -> None:
        if reader.cache is None:
            raise ValueError("downloaded lists need a directory to be kept in")
        self._reader = reader
        self._cache: ListCache = reader.cache
        self._base = base
        self._reload = reload
        self.status: dict[str, ListStatus] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def follow(self, loaded: Loaded | None) -> None:
        """Watch the lists of ``loaded`` (after the start and every reload)."""
        now = time.monotonic()
        status: dict[str, ListStatus] = {}
        for location, read in (loaded.lists if loaded is not None else {}).items():
            held = self.status.get(location)
            current = held if held is not None and held.spec == read.spec else None
            status[location] = self._status(read, current, now)
            if read.parsed is None and current is None:
                log.warning(
                    "list %s: no copy yet; its rule routes without it until it is downloaded",
                    location,
                )
        self.status = status
        self._wake.set()

    def _status(self, read: ListRead, held: ListStatus | None, now: float) -> ListStatus:
        status = held or ListStatus(read.spec)
        status.entries = read.entries
        status.updated_at = read.updated_at
        every = read.spec.refresh_every
        if held is not None or every is None:
            if every is None:
                status.due = float("inf")
            return status
        if read.spec.file is not None:
            status.file_stamp = _stamp(self._base / read.spec.file)
            status.last_success = read.updated_at
            status.due = now + every
        else:  # a URL: due when its copy is as old as the interval (now, with none)
            age = time.time() - read.updated_at if read.updated_at is not None else every
            status.last_success = read.updated_at
            status.due = now + max(0.0, every - age)
        return status

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="list refresh")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        client = None
        try:
            while True:
                due = min((s.due for s in self.status.values()), default=float("inf"))
                self._wake.clear()
                if due > time.monotonic():
                    timeout = min(due - time.monotonic(), 3600.0)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    continue
                if client is None and any(s.spec.url for s in self.status.values()):
                    client = session()
                if await self.refresh_due(client):
                    log.info("a list changed: reloading")
                    await self._reload()
        finally:
            if client is not None:
                await client.close()

    async def refresh_due(self, client: aiohttp.ClientSession | None) -> bool:
        """Refresh every list that is due; whether any of them changed."""
        now = time.monotonic()
        changed = False
        for status in list(self.status.values()):
            if status.due > now:
                continue
            every = status.spec.refresh_every or 0
            try:
                if status.spec.url is not None:
                    changed |= await self._download(client, status)
                else:
                    changed |= self._file_changed(status)
            except FetchError as e:
                status.failures += 1
                status.last_error = str(e)
                retry = min(every, FIRST_RETRY * 2 ** min(status.failures - 1, 10))
                status.due = time.monotonic() + retry
                log.warning(
                    "list %s: %s; the last good copy stays (%s), next try in %.0f s",
                    status.spec.location,
                    e,
                    _age(status.updated_at),
                    retry,
                )
            else:
                status.last_error = None
                status.due = time.monotonic() + every
        return changed

    async def _download(self, client: aiohttp.ClientSession | None, status: ListStatus) -> bool:
        url = status.spec.url
        assert url is not None and client is not None
        previous = self._cache.get(url)
        copy = await download(client, url, previous)
        if copy is None or (previous is not None and copy.data == previous.data):
            status.last_success = time.time()
            self._cache.touch(url, status.last_success)
            log.debug("list %s: unchanged", url)
            return False
        parsed = await asyncio.to_thread(self._reader.parse, status.spec, copy.data, None)
        if (why := refusal(parsed)) is not None:
            raise FetchError(f"new copy refused: {why}")
        self._cache.put(copy)
        status.last_success = copy.fetched_at
        log.info(
            "list %s: new copy, %d domains and %d networks",
            url,
            len(parsed.domains),
            len(parsed.networks),
        )
        return True

    def _file_changed(self, status: ListStatus) -> bool:
        assert status.spec.file is not None
        path = self._base / status.spec.file
        try:
            stamp = _stamp(path)
        except OSError as e:
            raise FetchError(f"cannot read {path}: {e.strerror or e}") from e
        status.last_success = time.time()
        if stamp == status.file_stamp:
            return False
        status.file_stamp = stamp
        log.info("list %s changed on disk", path)
        return True


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def _age(when: float | None) -> str:
    if when is None:
        return "none yet: the rule routes without this list"
    return f"from {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(when))}"
