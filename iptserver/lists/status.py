"""How each of the schema's lists stands: what the daemon's refreshes found."""

from __future__ import annotations

from dataclasses import dataclass

from iptserver.schema.model import RuleList


@dataclass(slots=True)
class ListStatus:
    """What the daemon knows of one list (``/metrics``, ``iptserver lists show``)."""

    spec: RuleList
    entries: int = 0
    updated_at: float | None = None  # the copy in use: downloaded, or the file's mtime
    last_success: float | None = None  # the last download (or re-read) that worked
    failures: int = 0
    last_error: str | None = None
    due: float = 0.0  # monotonic time of the next refresh
    file_stamp: tuple[int, int] | None = None  # (mtime_ns, size) of a local list
