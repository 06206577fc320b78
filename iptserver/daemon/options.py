"""What ``iptserver run`` was asked to do."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iptserver.errors import Problem, SchemaError
from iptserver.lists.store import ListCache, ListReader, load_with_lists
from iptserver.schema.entries import NotAnEntry, for_entry
from iptserver.schema.load import Loaded
from iptserver.schema.mesh import entries_of
from iptserver.schema.model import Schema
from iptserver.schema.values import Endpoint, format_endpoint


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
    workers: int = 1  # processes answering DNS on the same addresses (SO_REUSEPORT)
    lists_dir: Path | None = None  # the last good copies of downloaded lists
    node: str | None = None  # the entry this daemon runs on (a schema with several)

    @property
    def lists_reader(self) -> ListReader:
        """A reader of the schema's lists, with the downloaded copies of ``lists_dir``."""
        return ListReader(ListCache(self.lists_dir) if self.lists_dir is not None else None)

    @property
    def state_file(self) -> Path | None:
        return self.state_dir / "exits.json" if self.state_dir is not None else None

    def api_endpoint(self, schema: Schema) -> Endpoint | None:
        """Where the HTTP API listens: --api, else api.listen; None: no API."""
        return self.api or schema.api.listen

    def load(self, reader: ListReader) -> Loaded:
        """The schema on disk, its lists read by ``reader``, with the command line's
        overrides; raises SchemaError."""
        loaded = for_node(load_with_lists(self.config, reader), self.config, self.node)
        updates: dict[str, Any] = {}
        if self.listen:
            updates["listen"] = list(self.listen)
        if self.upstream:
            updates["upstream"] = list(self.upstream)
        if not updates:
            return loaded
        dns = loaded.schema.dns.model_copy(update=updates)
        return dataclasses.replace(loaded, schema=loaded.schema.model_copy(update={"dns": dns}))


def for_node(loaded: Loaded, config: Path, node: str | None) -> Loaded:
    """The schema as entry ``node`` runs it (``schema.entries.for_entry``); a schema with
    several entries needs ``node``, one with a single entry takes it as a check."""
    entries = entries_of(loaded.schema.nodes)
    if node is None and len(entries) < 2:
        return loaded
    if node is None:
        message = (
            f"the schema has several entries ({', '.join(entries)}): say which one this "
            "daemon runs on with --node"
        )
        raise SchemaError([Problem(str(config), 0, 0, "nodes", message)])
    try:
        schema = for_entry(loaded.schema, node)
    except NotAnEntry as e:
        raise SchemaError([Problem(str(config), 0, 0, "nodes", f"--node: {e}")]) from e
    return dataclasses.replace(loaded, schema=schema)


def options_to_json(options: Options) -> dict[str, Any]:
    """What a worker needs of the daemon's options (its listen addresses as bound)."""
    return {
        "config": str(options.config),
        "geoip": str(options.geoip) if options.geoip else None,
        "listen": [format_endpoint(e) for e in options.listen],
        "upstream": [format_endpoint(e) for e in options.upstream],
        "fail_closed": options.fail_closed,
        "lists_dir": str(options.lists_dir) if options.lists_dir else None,
        "node": options.node,
    }


def options_from_json(data: dict[str, Any]) -> Options:
    return Options(
        config=Path(data["config"]),
        geoip=Path(data["geoip"]) if data["geoip"] else None,
        listen=tuple(Endpoint.parse(e) for e in data["listen"]),
        upstream=tuple(Endpoint.parse(e) for e in data["upstream"]),
        fail_closed=data["fail_closed"],
        lists_dir=Path(data["lists_dir"]) if data.get("lists_dir") else None,
        node=data.get("node"),
    )
