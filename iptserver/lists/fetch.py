"""Download a list, and judge a new copy before it replaces the last good one.

A download asks with the last copy's ``ETag`` and ``Last-Modified`` (a server that
supports them answers 304 and sends nothing), stops past a size limit, and gives up
after a timeout. A copy that parses to nothing, or to more malformed lines than entries
(an error page served with status 200, a list moved to another format), is refused: the
last good copy stays.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from iptserver.lists.model import ParsedList
from iptserver.lists.store import ListCopy

if TYPE_CHECKING:
    import aiohttp

MAX_BYTES = 64 * 1024 * 1024
TIMEOUT = 60.0  # seconds for a whole download
CONNECT_TIMEOUT = 10.0
_CHUNK = 256 * 1024


class FetchError(Exception):
    """A download that gave no usable list; the message says why, for the log."""


def session() -> aiohttp.ClientSession:
    """A client session for list downloads (aiohttp is imported only when one is made:
    it costs 11 MB, and most schemas download nothing)."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=TIMEOUT, connect=CONNECT_TIMEOUT)
    return aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": "iptserver"})


async def download(
    client: aiohttp.ClientSession,
    url: str,
    previous: ListCopy | None,
    max_bytes: int = MAX_BYTES,
) -> ListCopy | None:
    """The list at ``url``, or None when the server says ``previous`` is still current;
    raises FetchError."""
    import aiohttp

    headers = {}
    if previous is not None and previous.etag:
        headers["If-None-Match"] = previous.etag
    if previous is not None and previous.last_modified:
        headers["If-Modified-Since"] = previous.last_modified
    try:
        async with client.get(url, headers=headers) as response:
            if response.status == 304 and previous is not None:
                return None
            if response.status != 200:
                raise FetchError(f"HTTP {response.status} {response.reason or ''}".rstrip())
            if (response.content_length or 0) > max_bytes:
                raise FetchError(f"{response.content_length} bytes: more than {max_bytes}")
            data = bytearray()
            async for chunk in response.content.iter_chunked(_CHUNK):
                data += chunk
                if len(data) > max_bytes:
                    raise FetchError(f"more than {max_bytes} bytes")
            return ListCopy(
                url,
                bytes(data),
                time.time(),
                response.headers.get("ETag"),
                response.headers.get("Last-Modified"),
            )
    except TimeoutError:
        raise FetchError(f"no whole answer within {TIMEOUT:.0f} s") from None
    except aiohttp.ClientError as e:
        raise FetchError(str(e) or type(e).__name__) from e


def refusal(parsed: ParsedList) -> str | None:
    """Why a new copy must not replace the last good one, or None when it may."""
    entries = len(parsed.domains) + len(parsed.networks)
    if entries == 0:
        first = f"; first: {parsed.problems[0]}" if parsed.problems else ""
        return f"no domains or networks in it{first}"
    if len(parsed.problems) > entries:
        return (
            f"{len(parsed.problems)} malformed lines against {entries} entries (first: "
            f"{parsed.problems[0]}): not a {parsed.format.value} list any more?"
        )
    return None
