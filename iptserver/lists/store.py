"""Where a schema's lists are read from: local files, and the last good copy of each
downloaded list.

A downloaded list is kept in the lists directory (``STATE_DIR/lists``) as two files:
the bytes as served, and a small JSON of where and when they came from (``ETag``,
``Last-Modified``, the time of the download). The daemon reads lists only from here and
from local files; downloading (``iptserver.lists.fetch``) writes here first, so a
restart without network routes as the last run did.

Parsing a list of 500,000 lines takes seconds: :class:`ListReader` parses a list again
only when its bytes changed, so a reload that changes one rule costs nothing for the
lists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from iptserver.errors import Problem, SchemaError
from iptserver.lists.formats import parse_list
from iptserver.lists.model import ParsedList
from iptserver.schema.load import Loaded, load_schema
from iptserver.schema.model import ListFormat, RuleList, Schema

log = logging.getLogger("iptserver.lists")


@dataclass(frozen=True, slots=True)
class ListCopy:
    """The last good copy of a downloaded list."""

    url: str
    data: bytes
    fetched_at: float  # when it was downloaded (or last found unchanged), Unix time
    etag: str | None = None
    last_modified: str | None = None


class ListCache:
    """The last good copies of downloaded lists, in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _paths(self, url: str) -> tuple[Path, Path]:
        stem = hashlib.sha256(url.encode()).hexdigest()[:24]
        return self.directory / f"{stem}.list", self.directory / f"{stem}.json"

    def get(self, url: str) -> ListCopy | None:
        """The copy of ``url``, or None when there is none (or it cannot be read)."""
        data_path, meta_path = self._paths(url)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            data = data_path.read_bytes()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("list %s: the last good copy in %s cannot be read: %s", url, data_path, e)
            return None
        if not isinstance(meta, dict) or meta.get("url") != url:
            return None
        return ListCopy(
            url, data, float(meta.get("fetched_at", 0)), meta.get("etag"), meta.get("last_modified")
        )

    def put(self, copy: ListCopy) -> None:
        """Keep ``copy`` as the last good one (written whole, then renamed into place)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        data_path, meta_path = self._paths(copy.url)
        meta = {
            "url": copy.url,
            "fetched_at": copy.fetched_at,
            "etag": copy.etag,
            "last_modified": copy.last_modified,
            "bytes": len(copy.data),
        }
        _write_atomically(data_path, copy.data)
        _write_atomically(meta_path, json.dumps(meta, indent=2).encode())

    def touch(self, url: str, when: float) -> None:
        """The server said the copy is still current (304): note when."""
        copy = self.get(url)
        if copy is not None:
            _, meta_path = self._paths(url)
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            meta["fetched_at"] = when
            _write_atomically(meta_path, json.dumps(meta, indent=2).encode())


def _write_atomically(path: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class ListRead:
    """One list as the schema is loaded: its entries, or why there are none."""

    spec: RuleList
    parsed: ParsedList | None  # None: a URL list never downloaded
    updated_at: float | None  # the copy's download time, or the file's modification time

    @property
    def entries(self) -> int:
        if self.parsed is None:
            return 0
        return len(self.parsed.domains) + len(self.parsed.networks)


class ListReader:
    """Reads every list a schema names; keeps each parsed list while its bytes are the
    same, so reloads and the daemon's refreshes parse only what changed."""

    def __init__(self, cache: ListCache | None, quiet: bool = False) -> None:
        self.cache = cache
        self._quiet = quiet  # a command prints the problems itself; the daemon logs them
        self._parsed: dict[tuple[str, ListFormat], tuple[bytes, ParsedList]] = {}

    def read(self, loaded: Loaded) -> dict[str, ListRead]:
        """Each list of ``loaded``'s rules by location; raises SchemaError naming the
        schema's line when a local list cannot be read."""
        base = Path(loaded.file).parent
        found: dict[str, ListRead] = {}
        problems: list[Problem] = []
        kept: set[tuple[str, ListFormat]] = set()
        for (rule, index), spec in _lists_of(loaded.schema):
            if spec.location in found:
                continue
            try:
                found[spec.location] = self._read(spec, base)
            except OSError as e:
                line, column = loaded.list_lines.get((rule, index), (1, 1))
                reason = e.strerror or str(e)
                problems.append(
                    Problem(
                        loaded.file,
                        line,
                        column,
                        f"rules.{rule}.lists.{index}.file",
                        f"cannot read the list {spec.file}: {reason}",
                    )
                )
            kept.add((spec.location, spec.format))
        if problems:
            raise SchemaError(problems)
        for key in set(self._parsed) - kept:  # lists no longer named: let them go
            del self._parsed[key]
        return found

    def _read(self, spec: RuleList, base: Path) -> ListRead:
        if spec.file is not None:
            path = base / spec.file
            data = path.read_bytes()
            return ListRead(spec, self.parse(spec, data, path), path.stat().st_mtime)
        assert spec.url is not None
        copy = self.cache.get(spec.url) if self.cache is not None else None
        if copy is None:
            return ListRead(spec, None, None)
        return ListRead(spec, self.parse(spec, copy.data, None), copy.fetched_at)

    def parse(self, spec: RuleList, data: bytes, path: Path | None) -> ParsedList:
        key = (spec.location, spec.format)
        digest = hashlib.sha256(data).digest()
        held = self._parsed.get(key)
        if held is not None and held[0] == digest:
            return held[1]
        started = time.monotonic()
        name = str(path) if path is not None else spec.location
        parsed = parse_list(name, data, spec.format, include=_includes(path))
        self._parsed[key] = (digest, parsed)
        if not self._quiet:
            _report(parsed, time.monotonic() - started)
        return parsed


def _includes(path: Path | None) -> Callable[[str], bytes] | None:
    """v2fly ``include:NAME`` reads NAME beside the list (a local list only)."""
    if path is None:
        return None
    directory = path.parent

    def read(name: str) -> bytes:
        return (directory / name).read_bytes()

    return read


def _report(parsed: ParsedList, seconds: float) -> None:
    log.info(
        "list %s (%s): %d domains, %d networks, read in %.1f s",
        parsed.source,
        parsed.format.value,
        len(parsed.domains),
        len(parsed.networks),
        seconds,
    )
    if parsed.problems:
        shown = "\n".join(f"  {p}" for p in parsed.problems[:5])
        more = len(parsed.problems) - 5
        log.warning(
            "list %s: %d lines skipped:\n%s%s",
            parsed.source,
            len(parsed.problems),
            shown,
            f"\n  ... and {more} more (iptserver lists show)" if more > 0 else "",
        )


def _lists_of(schema: Schema) -> Iterator[tuple[tuple[int, int], RuleList]]:
    for i, rule in enumerate(schema.rules):
        for j, spec in enumerate(rule.lists):
            yield (i, j), spec


def with_lists(schema: Schema, lists: dict[str, ListRead]) -> Schema:
    """``schema`` with each rule's list entries added to its own domains and nets: the
    policy core and the kernel plan then need nothing new. Not validated again: the
    entries were made by the list parsers as the schema's own types."""
    if not any(rule.lists for rule in schema.rules):
        return schema
    rules = []
    for rule in schema.rules:
        if not rule.lists:
            rules.append(rule)
            continue
        domains = list(rule.domains)
        nets = list(rule.nets)
        for spec in rule.lists:
            parsed = lists[spec.location].parsed
            if parsed is not None:
                domains += parsed.domains
                nets += parsed.networks
        rules.append(rule.model_copy(update={"domains": domains, "nets": nets}))
    return schema.model_copy(update={"rules": rules})


def load_with_lists(path: str | Path, reader: ListReader) -> Loaded:
    """The schema at ``path`` with its lists read and their entries in its rules (see
    :func:`with_lists`); raises SchemaError."""
    loaded = load_schema(path)
    lists = reader.read(loaded)
    return dataclasses.replace(loaded, schema=with_lists(loaded.schema, lists), lists=lists)
