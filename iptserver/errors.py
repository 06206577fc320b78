"""The project's error tree.

    IptserverError
    ├── SchemaError       a routing schema that cannot be used (carries every problem found)
    ├── GeoIPError        a GeoIP database that cannot be opened or read
    ├── DataplaneError    the kernel refused a change (sets, rules, routes, iptables)
    ├── DnsListenError    the DNS proxy cannot listen where asked (dns/listeners.py)
    ├── KeyFileError      a WireGuard key file that cannot be read, written or used
    ├── RenderError       a render that cannot be done as asked (render/wireguard.py)
    ├── ComposeError      the user's compose file cannot be read or used (render/compose.py)
    ├── UsageError        a command-line value that cannot be used (a query, a country)
    └── LabError          the lab could not be built, used or torn down (lab/errors.py)
        ├── CommandError  a command in a lab namespace failed
        └── ProbeError    a probe (DNS query, whoami) failed

Errors from third-party libraries are translated into these at the boundary that
calls the library, with ``raise ... from e``. ``iptserver.cli.main`` catches
IptserverError once and turns it into one line on stderr and an exit status.

Outside the tree, because they never leave the module that raises them: the DNS
proxy's ``BadQuery``, ``UpstreamFailure`` and ``WireError`` (a packet answered or
dropped) and the API's ``BadRequest`` (an HTTP 400).
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


class SetFullError(DataplaneError):
    """A learned set holds ``kernel.max_learned`` entries: the answer's cannot be added."""


class KeyFileError(IptserverError):
    """A WireGuard key file that cannot be read, written or used."""


class UsageError(IptserverError):
    """A value on the command line that parses as text but cannot be used."""
