"""What parsing a list gives: its patterns and networks, where each came from, and what
was wrong with it.

A list is someone else's file: a malformed line is a :class:`ListProblem` beside the
entries that did parse, never an exception, so one typo in a list of 100,000 domains
costs that line only.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from iptserver.errors import Problem
from iptserver.schema.model import ListFormat
from iptserver.schema.values import DomainPattern, IPNetwork

__all__ = ["ListFormat", "ListProblem", "Origin", "ParsedList"]


@dataclass(frozen=True, slots=True)
class ListProblem:
    """One line of a list that was skipped, and why."""

    source: str  # the list's name as the caller gave it (or an include:NAME)
    line: int  # 1-based
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"

    def as_problem(self) -> Problem:
        """The same, as the schema loader reports problems (``check`` prints these)."""
        return Problem(self.source, self.line, 1, "", self.message)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an entry was written: for ``explain`` to cite."""

    source: str
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass(frozen=True, slots=True)
class ParsedList:
    """The entries of one list, each once, in the order first written.

    ``domains[i]`` was written at ``domain_origin(i)``; likewise for networks. The
    origins are kept as parallel tuples rather than one object per entry: a list can
    hold hundreds of thousands of entries.
    """

    source: str
    format: ListFormat
    domains: tuple[DomainPattern, ...]
    networks: tuple[IPNetwork, ...]
    problems: tuple[ListProblem, ...]
    domain_lines: Sequence[int]  # arrays of unsigned ints: 4 bytes a line, not 36
    network_lines: Sequence[int]
    # Which file each entry came from; differs from ``source`` only for a v2fly include.
    domain_sources: tuple[str, ...]
    network_sources: tuple[str, ...]

    def __post_init__(self) -> None:
        if not len(self.domains) == len(self.domain_lines) == len(self.domain_sources):
            raise ValueError("every domain pattern needs one line and one source")
        if not len(self.networks) == len(self.network_lines) == len(self.network_sources):
            raise ValueError("every network needs one line and one source")

    def domain_origin(self, index: int) -> Origin:
        return Origin(self.domain_sources[index], self.domain_lines[index])

    def network_origin(self, index: int) -> Origin:
        return Origin(self.network_sources[index], self.network_lines[index])


class ListBuilder:
    """Collects one list's entries as a parser finds them; duplicates keep the first."""

    def __init__(self, source: str, list_format: ListFormat) -> None:
        self.source = source
        self.format = list_format
        self._seen: set[str] = set()  # a pattern's text is unique to it
        self._seen_networks: set[int] = set()
        self._domains: list[DomainPattern] = []
        self._domain_lines = array("I")
        self._domain_sources: list[str] = []
        self._networks: list[IPNetwork] = []
        self._network_lines = array("I")
        self._network_sources: list[str] = []
        self._problems: list[ListProblem] = []

    def domain(self, pattern: DomainPattern, line: int, source: str | None = None) -> None:
        if pattern.text not in self._seen:
            self._seen.add(pattern.text)
            self._domains.append(pattern)
            self._domain_lines.append(line)
            self._domain_sources.append(source or self.source)

    def network(self, network: IPNetwork, line: int, source: str | None = None) -> None:
        # Keyed by an int: hashing an IPv4Network costs four times as much.
        key = int(network.network_address) << 8 | network.prefixlen
        key = key if network.version == 4 else ~key
        if key not in self._seen_networks:
            self._seen_networks.add(key)
            self._networks.append(network)
            self._network_lines.append(line)
            self._network_sources.append(source or self.source)

    def problem(self, line: int, message: str, source: str | None = None) -> None:
        self._problems.append(ListProblem(source or self.source, line, message))

    def build(self) -> ParsedList:
        return ParsedList(
            source=self.source,
            format=self.format,
            domains=tuple(self._domains),
            networks=tuple(self._networks),
            problems=tuple(self._problems),
            domain_lines=self._domain_lines,
            network_lines=self._network_lines,
            domain_sources=tuple(self._domain_sources),
            network_sources=tuple(self._network_sources),
        )


def decode_text(data: str | bytes) -> tuple[str, int | None]:
    """The text of a list, and the line of its first byte that is not UTF-8, if any.

    Undecodable bytes become U+FFFD, so the lines they sit on are reported as malformed
    rather than the whole list refused. A byte order mark is dropped.
    """
    if isinstance(data, str):
        return data.removeprefix("\ufeff"), None
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return data.decode("utf-8-sig", errors="replace"), line


def split_lines(text: str) -> list[str]:
    """Lines as an editor numbers them: only ``\\n`` ends a line (``\\r`` is stripped
    with the rest of the white space), unlike ``str.splitlines``."""
    return text.split("\n")
