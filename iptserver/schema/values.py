"""Value types of the schema: domain patterns, country codes, networks, addresses, endpoints.

Each parser raises ``ValueError`` with a message that names the bad value and says
what would be right; the loader puts the file position in front of it.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

from pydantic import (
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from iptserver.schema.countries import COMMON_MISTAKES, COUNTRY_CODES

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def normalize_name(name: str) -> str:
    """DNS names compare case-insensitively and with or without the trailing dot."""
    return name.strip().rstrip(".").lower()


class PatternKind(enum.Enum):
    EXACT = "exact"  # =example.com: that name only
    SUBTREE = "subtree"  # example.com, .example.com: the name and every name under it
    BELOW = "below"  # *.example.com: names under it, not the name itself
    REGEX = "regex"  # ~regex: Python re.match on the name (MRVPN2 semantics)


@dataclass(frozen=True, slots=True)
class DomainPattern:
    kind: PatternKind
    value: str  # normalized name, or the regex source
    text: str  # as written in the schema

    def __str__(self) -> str:
        return self.text


def _idna(name: str) -> str:
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError as e:
        raise ValueError(f"{name!r} is not a valid domain name ({e})") from None


def _check_name(name: str, text: str) -> str:
    name = normalize_name(name)
    if not name.isascii():
        name = _idna(name)
    if not name:
        raise ValueError(f"{text!r} names no domain")
    for label in name.split("."):
        if not _LABEL.match(label):
            raise ValueError(
                f"{text!r} is not a domain name: label {label!r} must be 1-63 letters, "
                "digits, '-' or '_' (for a regular expression write '~' before it)"
            )
    return name


def parse_domain_pattern(raw: Any) -> DomainPattern:
    if isinstance(raw, DomainPattern):
        return raw
    if not isinstance(raw, str):
        raise ValueError(f"a domain pattern must be a string, not {type(raw).__name__}")
    text = raw.strip()
    if text.startswith("~"):
        source = text[1:]
        try:
            re.compile(source, re.IGNORECASE)
        except re.error as e:
            raise ValueError(f"regular expression '{source}' does not compile: {e}") from None
        if not source:
            raise ValueError("empty regular expression after '~'")
        return DomainPattern(PatternKind.REGEX, source, text)
    if text.startswith("="):
        return DomainPattern(PatternKind.EXACT, _check_name(text[1:], text), text)
    if text.startswith("*."):
        return DomainPattern(PatternKind.BELOW, _check_name(text[2:], text), text)
    if text.startswith("."):
        return DomainPattern(PatternKind.SUBTREE, _check_name(text[1:], text), text)
    return DomainPattern(PatternKind.SUBTREE, _check_name(text, text), text)


def parse_country(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"a country must be a two-letter code, not {type(raw).__name__}")
    code = raw.strip().upper()
    if code in COUNTRY_CODES:
        return code
    hint = f"; did you mean {COMMON_MISTAKES[code]}?" if code in COMMON_MISTAKES else ""
    raise ValueError(f"{raw!r} is not an ISO 3166-1 alpha-2 country code{hint}")


def parse_network(raw: Any) -> IPNetwork:
    if isinstance(raw, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return raw
    if not isinstance(raw, str):
        raise ValueError(f"a network must be a CIDR string, not {type(raw).__name__}")
    text = raw.strip()
    address, _, length = text.partition("/")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{text!r} is not a network: {address!r} is not an IP address") from None
    if not length:
        return ipaddress.ip_network(ip)
    bits = ip.max_prefixlen
    if not length.isdigit() or not 0 <= int(length) <= bits:
        raise ValueError(
            f"{text!r} is not a network: prefix length must be 0-{bits} for IPv{ip.version}"
        )
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        proper = ipaddress.ip_network(text, strict=False)
        raise ValueError(f"{text!r} has host bits set; did you mean {proper}?") from None


_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION = 30 * 86400


def parse_duration(raw: Any) -> int:
    """Seconds, as a whole number or ``30s``, ``15m``, ``6h``, ``1d``: 1 s to 30 days."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ValueError(f"a duration is seconds or 30s/15m/6h/1d, not {type(raw).__name__}")
    found = _DURATION.match(str(raw).strip().lower())
    if found is None:
        raise ValueError(f"{raw!r} is not a duration: write seconds, or 30s, 15m, 6h, 1d")
    seconds = int(found[1]) * _UNITS[found[2]]
    if not 1 <= seconds <= MAX_DURATION:
        raise ValueError(f"{raw!r} must be from 1 second to 30 days")
    return seconds


DNS_PORT = 53


def parse_endpoint(raw: Any) -> Endpoint:
    """``ADDR:PORT`` or ``[V6ADDR]:PORT``, the port written out (1-65535): as a schema and
    the command line take it."""
    if not isinstance(raw, str):
        raise ValueError(f"an address must be written ADDR:PORT, not {type(raw).__name__}")
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{raw!r} is not ADDR:PORT (port 1-65535)")
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(f"{raw!r} is not ADDR:PORT: {host!r} is not an IP address") from None
    return Endpoint(address, int(port))


def format_endpoint(endpoint: tuple[IPAddress, int]) -> str:
    address, port = endpoint
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


class Endpoint(NamedTuple):
    """An address and a port: where something listens, or is reached.

    The one endpoint type of the project. A plain ``(address, port)`` tuple compares equal
    and works wherever one is asked; a schema field of this type takes ``ADDR:PORT``
    (:func:`parse_endpoint`) and writes it back the same way.
    """

    address: IPAddress
    port: int = DNS_PORT

    def __str__(self) -> str:
        return format_endpoint(self)

    @classmethod
    def parse(cls, text: str, default_port: int = DNS_PORT) -> Endpoint:
        """``ADDR``, ``ADDR:PORT``, ``[ADDR6]`` or ``[ADDR6]:PORT``, port 0-65535: the
        lenient form a DNS proxy's settings take (a missing port is ``default_port``)."""
        host, port = text.strip(), str(default_port)
        if host.startswith("["):
            host, bracket, rest = host[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ValueError(f"{text!r} is not ADDR:PORT or [ADDR6]:PORT")
            if rest:
                port = rest[1:]
        elif host.count(":") == 1:
            host, port = host.split(":")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{text!r}: port {port!r} is not a number from 0 to 65535")
        return cls(address, int(port))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validated by :func:`parse_endpoint`, written back as ``ADDR:PORT``."""
        return core_schema.no_info_plain_validator_function(
            parse_endpoint,
            serialization=core_schema.plain_serializer_function_ser_schema(format_endpoint),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "description": "ADDR:PORT, e.g. 127.0.0.1:53"}


Domain = Annotated[
    DomainPattern,
    PlainValidator(parse_domain_pattern),
    PlainSerializer(str),
    WithJsonSchema(
        {
            "type": "string",
            "description": "example.com (the name and names under it), *.example.com "
            "(names under it), =example.com (that name only), ~REGEX (matched from the "
            "start of the name)",
        }
    ),
]
Country = Annotated[
    str,
    PlainValidator(parse_country),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[A-Za-z]{2}$",
            "description": "ISO 3166-1 alpha-2 country code",
        }
    ),
]
Network = Annotated[
    IPNetwork,
    PlainValidator(parse_network),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "description": "CIDR, e.g. 203.0.113.0/24 or 2001:db8::/32"}),
]
Duration = Annotated[
    int,
    PlainValidator(parse_duration),
    WithJsonSchema(
        {
            "type": ["integer", "string"],
            "description": "seconds, or a number with s, m, h or d (30s, 15m, 6h, 1d)",
        }
    ),
]


def parse_source(raw: Any) -> IPNetwork | str:
    """A rule's source: a network (CIDR or address), or the name of a client, which the
    loader checks against ``clients.peers``."""
    if (
        isinstance(raw, str)
        and raw.strip()
        and not any(c in raw for c in ":/")
        and not (raw.strip()[-1:].isdigit())
    ):
        name = raw.strip()
        if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$", name):
            raise ValueError(f"{raw!r} is neither a network nor a client's name")
        return name
    return parse_network(raw)


Source = Annotated[
    IPNetwork | str,
    PlainValidator(parse_source),
    PlainSerializer(str),
    WithJsonSchema(
        {
            "type": "string",
            "description": "a network (10.77.1.0/24, fd77:1::2) or a name of clients.peers",
        }
    ),
]
