"""List entries as the schema's own pattern kinds, so the policy core needs nothing new.

Every list format has a handful of entry kinds; each maps onto one
:class:`~iptserver.schema.values.PatternKind`:

    ===================================  ===============================================
    a list says                          schema pattern (``DomainPattern.text``)
    ===================================  ===============================================
    the name and every name under it     SUBTREE ``example.com``
    names under it, not the name         BELOW ``*.example.com``
    that name only                       EXACT ``=example.com``
    keyword (substring of the name)      REGEX ``~.*keyword`` (the matcher turns this
                                         back into a substring test)
    name ends with a string (dnsmasq     REGEX ``~.*google\\.com$`` (string suffix)
    ``*google.com``)
    Go regular expression (unanchored)   REGEX ``~.*(?:RE)`` or ``~^RE`` (re.match)
    ===================================  ===============================================

Names are checked as the schema checks them (labels of letters, digits, ``-``, ``_``;
IDNA for non-ASCII), with one refusal more: a name whose last label is all digits is a
mistyped address, not a domain.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from iptserver.schema.values import (
    DomainPattern,
    IPNetwork,
    PatternKind,
    parse_domain_pattern,
    parse_network,
)

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# The same rule as a whole-name test without backtracking (possessive quantifiers): runs
# of letters, digits and '_' joined by '-' within a label, labels joined by dots. The
# 63-character limit is checked apart.
_LABEL_RUNS = r"[a-z0-9_]++(?:-++[a-z0-9_]++)*+"
_NAME = re.compile(rf"{_LABEL_RUNS}(?:\.{_LABEL_RUNS})*+")
_KEYWORD = re.compile(r"[a-z0-9._-]+")
# Go's [[:alpha:]] classes: Python reads them as a set of the characters "[:alph]".
_POSIX_CLASS = re.compile(r"\[:\^?[a-z]+:\]")
_LEADING_FLAGS = re.compile(r"^\(\?[a-zA-Z]+\)")


def domain_name(text: str) -> str:
    """``text`` as a normalized DNS name (lower case, no trailing dot), or ValueError."""
    name = text.strip().rstrip(".").lower()
    if not _is_name(name):
        if name.isascii() or not name:
            raise ValueError(_not_a_name(text, name))
        name = parse_domain_pattern("=" + name).value  # IDNA, as the schema does it
    if name[-1].isdigit() and name.rpartition(".")[2].isdigit():
        raise ValueError(
            f"{text!r} is neither an IP address nor a domain name "
            "(a domain's last label is never all digits)"
        )
    return name


def plain_name(text: str) -> str | None:
    """``text`` when it already is a normalized name (lower case, no trailing dot, not
    ending in a digit), else None: the cheap test most lines of a list pass, so that
    only the rest pay for ``domain_name``."""
    if text[-1:].isdigit() or not _is_name(text):
        return None
    return text


def _is_name(name: str) -> bool:
    """The schema's label rule in one regex call: a list may hold a million names."""
    return _NAME.fullmatch(name) is not None and (
        len(name) <= 63 or max(len(label) for label in name.split(".")) <= 63
    )


def _not_a_name(text: str, name: str) -> str:
    if not name:
        return f"{text!r} names no domain"
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            return (
                f"{text!r} is not a domain name: label {label!r} must be 1-63 letters, "
                "digits, '-' or '_', and not begin or end with '-'"
            )
    return f"{text!r} is not a domain name"


def subtree(name: str) -> DomainPattern:
    """The name and every name under it (``name`` already normalized)."""
    return DomainPattern(PatternKind.SUBTREE, name, name)


def below(name: str) -> DomainPattern:
    """Names under ``name``, not ``name`` itself."""
    return DomainPattern(PatternKind.BELOW, name, "*." + name)


def exact(name: str) -> DomainPattern:
    return DomainPattern(PatternKind.EXACT, name, "=" + name)


def regex(source: str) -> DomainPattern:
    """A regular expression with the schema's meaning: ``re.match`` on the name."""
    try:
        re.compile(source, re.IGNORECASE)
    except re.error as e:
        raise ValueError(f"regular expression {source!r} does not compile: {e}") from None
    return DomainPattern(PatternKind.REGEX, source, "~" + source)


def keyword(word: str) -> DomainPattern:
    """Names that contain ``word`` anywhere (v2fly ``keyword:``, sing-box
    ``domain_keyword``)."""
    word = word.strip().lower()
    if not _KEYWORD.fullmatch(word):
        raise ValueError(
            f"keyword {word!r} must be letters, digits, '.', '-' or '_' (no name holds others)"
        )
    source = ".*" + re.escape(word)
    return DomainPattern(PatternKind.REGEX, source, "~" + source)


def string_suffix(suffix: str) -> DomainPattern:
    """Names that end with ``suffix`` as a string, not only at a label boundary
    (dnsmasq ``/*google.com/`` also matches ``supergoogle.com``)."""
    source = ".*" + re.escape(suffix) + "$"
    return DomainPattern(PatternKind.REGEX, source, "~" + source)


def go_regex(source: str) -> DomainPattern:
    """A Go (RE2) regular expression as v2fly and sing-box use it: found anywhere in the
    name (``regexp.MatchString``), rewritten for the schema's ``re.match``.

    ``^RE`` without alternation already anchors at the start and is kept as written;
    otherwise ``.*`` is put in front, inside a group when the expression alternates. A
    ``^`` after ``.*`` still matches only at the start, as in Go.
    """
    if not source:
        raise ValueError("empty regular expression")
    if _POSIX_CLASS.search(source):
        raise ValueError(
            f"regular expression {source!r}: POSIX classes like [[:alpha:]] are not "
            "supported; write [a-z] instead"
        )
    flags_match = _LEADING_FLAGS.match(source)
    flags = flags_match.group() if flags_match else ""
    body = source[len(flags) :]
    if "|" in body:
        body = ".*(?:" + body + ")"
    elif not body.startswith("^"):
        body = ".*" + body
    return regex(flags + body)


def looks_like_address(token: str) -> bool:
    """Whether a token should be read as an address or network rather than a name: no
    domain holds ``:`` or ``/``, nor ends with a digit (its last label is a TLD)."""
    return ":" in token or "/" in token or token[-1:].isdigit()


def network(text: str) -> IPNetwork:
    """A CIDR or a bare address (a /32 or /128), or ValueError saying what is wrong."""
    try:
        if ":" in text:
            return ipaddress.IPv6Network(text)
        return _ipv4_network(text)
    except (ValueError, OSError):
        return parse_network(text)  # raises, with the schema's message


def _ipv4_network(text: str) -> ipaddress.IPv4Network:
    """``A.B.C.D[/N]`` at half the cost of ``IPv4Network(text)`` (lists hold 100,000s):
    the C parser reads the address, the tuple form skips parsing it again."""
    address, _, length = text.partition("/")
    if address.count(".") != 3 or any(len(o) > 1 and o[0] == "0" for o in address.split(".")):
        raise ValueError(text)  # inet_pton reads "1.2.3" and leading zeros too
    prefix = int(length) if length.isdigit() and len(length) <= 2 else 32 if not length else -1
    if not 0 <= prefix <= 32:
        raise ValueError(text)
    return ipaddress.IPv4Network(
        (int.from_bytes(socket.inet_pton(socket.AF_INET, address)), prefix)
    )
