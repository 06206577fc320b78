"""What an answer from outside may be: the limits, the checked request, the checks.

Answers come in two ways, ``POST /v1/answers`` (JSON) and the recursor plugin's datagram
(``plugin.py``); each parser reads its own format and builds an ``AnswerRequest`` with
the checks here, so the learner gets the same thing whichever way an answer came, and
a sender is told what is wrong in the same words.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from iptserver.schema.values import IPAddress, normalize_name

MAX_TTL = 2**31 - 1  # RFC 2181: a TTL is an unsigned 31-bit number
MAX_NAME = 253  # the longest name in presentation form (RFC 1035)
MAX_CHAIN = 16  # names in the CNAME chain after the qname
MAX_ADDRESSES = 512


class BadRequest(Exception):
    """What a sender sent breaks the contract: the message goes back to it."""


@dataclass(frozen=True, slots=True)
class AnswerRequest:
    """One resolved answer, checked: what the learner routes."""

    names: tuple[str, ...]  # the qname, then the CNAME chain
    addresses: tuple[IPAddress, ...]
    ttl: int
    request_id: str = "-"  # the datagram's id, echoed in its reply ("-": none, HTTP)
    client: str | None = None  # who asked the recursor (rules with sources apply to some)


def check_name(raw: object, where: str | None = None) -> str:
    """A DNS name, normalized; ``where`` names the field in the message (JSON has
    field names, a datagram's lines do not)."""
    if not isinstance(raw, str):
        raise BadRequest(f"{where or 'a name'} must be a string")
    name = normalize_name(raw)
    if not name or len(name) > MAX_NAME or any(c.isspace() or not c.isprintable() for c in name):
        raise _refusal(where, f"not a DNS name: {raw[:80]!r}")
    return name


def check_address(raw: object, where: str | None = None) -> IPAddress:
    """An IP address (not a network); ``where`` as for ``check_name``."""
    if not isinstance(raw, str):
        raise BadRequest(f"{where or 'an address'} must be a string")
    try:
        return _parse_address(raw)
    except ValueError:
        raise _refusal(where, f"not an IP address: {raw[:80]!r}") from None


def check_ttl(raw: object) -> int:
    """A TTL as RFC 2181 allows it (an int, not a bool)."""
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= MAX_TTL:
        raise BadRequest(f"ttl must be an integer from 0 to {MAX_TTL}")
    return raw


def check_chain_length(count: int) -> None:
    """``count``: the names after the qname."""
    if count > MAX_CHAIN:
        raise BadRequest(f"chain has more than {MAX_CHAIN} names")


def check_address_count(count: int) -> None:
    if count > MAX_ADDRESSES:
        raise BadRequest(f"addresses has more than {MAX_ADDRESSES} entries")


def _refusal(where: str | None, problem: str) -> BadRequest:
    return BadRequest(f"{where} is {problem}" if where else problem)


# Popular addresses come back in answer after answer: each is parsed once. (Errors are
# not cached, so a bad address is refused every time.)
_parse_address = functools.lru_cache(maxsize=4096)(ipaddress.ip_address)
