"""The project's error tree.

    IptserverError
    ├── SchemaError      a routing schema that cannot be used (carries every problem found)
    ├── GeoIPError       a GeoIP database that cannot be opened or read
    └── DataplaneError   the kernel refused a change (sets, rules, routes, iptables)

Errors from third-party libraries are translated into these at the boundary that
calls the library, with ``raise ... from e``.
"""

from __future__ import annotations

from dataclasses import dataclass


class IptserverError(Exception):
    """Root of every error iptserver raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a file, located where a person can find it."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.column}: {where}{self.message}"


class SchemaError(IptserverError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


class GeoIPError(IptserverError):
    pass


class DataplaneError(IptserverError):
    pass


class KeyFileError(IptserverError):
    """A WireGuard key file that cannot be read, written or used."""
