"""The daemon's worker processes (``iptserver run --workers N``): started after the
kernel is programmed, told of every reload, restarted when one dies, stopped first."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sys

from iptserver.daemon.options import Options, options_to_json
from iptserver.errors import IptserverError
from iptserver.schema.values import Endpoint

log = logging.getLogger("iptserver.daemon")

START_TIMEOUT = 30.0  # seconds a worker may take to load the schema and listen
STOP_TIMEOUT = 5.0  # seconds a worker may take to stop before it is killed
RESTART_DELAY = 1.0  # seconds before a worker that died is started again


class Workers:
    """``count`` processes beside the daemon, answering on ``listen`` (as bound)."""

    def __init__(self, count: int, options: Options, listen: tuple[Endpoint, ...]) -> None:
        self._count = count
        self._options = dataclasses.replace(options, listen=listen)
        self._exits = "[]"
        self._procs: list[asyncio.subprocess.Process] = []
        self._watchers: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one conversation with the workers at a time
        self._closing = False

    async def start(self, exits: str) -> None:
        """Start them all; raises IptserverError when one cannot answer."""
        self._exits = exits
        for _ in range(self._count):
            await self._spawn()

    async def _spawn(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "iptserver.daemon.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        hello = {
            "options": options_to_json(self._options),
            "exits": self._exits,
            "log_level": logging.getLogger().getEffectiveLevel(),
        }
        try:
            reply = await self._ask(proc, hello, START_TIMEOUT)
        except IptserverError:
            await _stop(proc)
            raise
        if reply != "ready":
            await _stop(proc)
            raise IptserverError(f"a DNS worker process did not start: {reply}")
        self._procs.append(proc)
        watcher = asyncio.create_task(self._watch(proc))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        log.info("DNS worker %d answers on the same addresses", proc.pid)

    async def _ask(self, proc: asyncio.subprocess.Process, message: object, timeout: float) -> str:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(message).encode() + b"\n")
            await proc.stdin.drain()
            async with asyncio.timeout(timeout):
                line = await proc.stdout.readline()
        except (OSError, TimeoutError) as e:
            raise IptserverError(f"DNS worker {proc.pid} does not answer: {e!r}") from e
        return line.decode(errors="replace").strip() or f"exited with {proc.returncode}"

    async def reload(self, exits: str) -> list[str]:
        """Tell every worker the new schema is in force; the problems of those that failed."""
        self._exits = exits
        async with self._lock:
            replies = await asyncio.gather(
                *(self._ask(p, {"exits": exits}, START_TIMEOUT) for p in self._procs),
                return_exceptions=True,
            )
        return [
            f"DNS worker {proc.pid} kept the previous schema: {reply}"
            for proc, reply in zip(self._procs, replies, strict=True)
            if reply != "reloaded"
        ]

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if self._closing:
            return
        self._procs.remove(proc)
        log.error(
            "DNS worker %d exited with %s: its share of the queries goes unanswered until "
            "it is started again (in %.0f s)",
            proc.pid,
            code,
            RESTART_DELAY,
        )
        await asyncio.sleep(RESTART_DELAY)
        async with self._lock:
            if self._closing:
                return
            try:
                await self._spawn()
            except (IptserverError, OSError) as e:
                log.error("cannot start a DNS worker again: %s", e)

    async def close(self) -> None:
        """Stop every worker: end of their input, then SIGKILL after STOP_TIMEOUT."""
        self._closing = True
        for watcher in list(self._watchers):
            watcher.cancel()
        await asyncio.gather(*(_stop(p) for p in self._procs))
        self._procs.clear()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
