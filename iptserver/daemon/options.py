"""What ``iptserver run`` was asked to do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iptserver.schema.model import Schema
from iptserver.schema.values import Endpoint


@dataclass(frozen=True)
class Options:
    config: Path
    geoip: Path | None = None
    listen: tuple[Endpoint, ...] = ()  # override the schema's dns.listen
    upstream: tuple[Endpoint, ...] = ()  # override the schema's dns.upstream
    keep_state: bool = False  # leave the kernel state in place on exit (for a restart)
    fail_closed: bool = False
    state_dir: Path | None = None  # where the exits the kernel holds are written down
    api: Endpoint | None = None  # override the schema's api.listen
    api_token_file: Path | None = None  # POST endpoints then need this bearer token

    @property
    def state_file(self) -> Path | None:
        return self.state_dir / "exits.json" if self.state_dir is not None else None

    def api_endpoint(self, schema: Schema) -> Endpoint | None:
        """Where the HTTP API listens: --api, else api.listen; None: no API."""
        return self.api or schema.api.listen
