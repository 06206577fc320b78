"""dnsmasq configuration lines as a list: the domains of ``server=/a/b/...`` and its kin.

The options that name domains between slashes are read, whatever their value after the
last slash (an upstream, an address, ipset or nftset names):

    server=/example.com/1.1.1.1     SUBTREE example.com (dnsmasq matches whole labels)
    local=/example.com/             SUBTREE example.com
    address=/a.com/b.com/0.0.0.0    SUBTREE a.com, SUBTREE b.com
    ipset=/a.com/vpn4,vpn6          SUBTREE a.com
    nftset=/a.com/4#inet#fw4#vpn    SUBTREE a.com
    server=/.example.com/...        SUBTREE example.com (dnsmasq: same as /example.com/)
    server=/*.example.com/...       BELOW example.com (the name ends with ".example.com")
    server=/*example.com/...        REGEX ~.*example\\.com$ (the name ends with
                                    "example.com": superexample.com too)

Refused, per domain: ``#`` (every domain) and the empty domain ``//`` (names without a
dot). Every other option is reported as not supported. Only whole-line ``#`` comments
exist in dnsmasq files: ``#`` inside a line is part of a value (``1.1.1.1#53``).
"""

from __future__ import annotations

from iptserver.lists import patterns
from iptserver.lists.model import ListBuilder, ListFormat, ParsedList, split_lines
from iptserver.schema.values import DomainPattern

DOMAIN_OPTIONS = ("server", "local", "address", "ipset", "nftset")


def parse_dnsmasq(source: str, text: str) -> ParsedList:
    out = ListBuilder(source, ListFormat.DNSMASQ)
    for number, raw in enumerate(split_lines(text), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        option, sep, value = line.partition("=")
        option = option.strip().removeprefix("--")
        value = value.strip()
        if not sep or option not in DOMAIN_OPTIONS:
            out.problem(
                number,
                f"dnsmasq option {option!r} is not supported: only "
                f"{', '.join(o + '=' for o in DOMAIN_OPTIONS)} name domains",
            )
            continue
        if not value.startswith("/") or value.count("/") < 2:
            out.problem(number, f"{line!r} names no domain: expected {option}=/DOMAIN/.../VALUE")
            continue
        for domain in value[1:].rpartition("/")[0].split("/"):
            try:
                out.domain(_pattern(domain.strip()), number)
            except ValueError as e:
                out.problem(number, str(e))
    return out.build()


def _pattern(domain: str) -> DomainPattern:
    if not domain:
        raise ValueError(
            "the empty domain '//' (names without a dot) is not supported: it names no domain"
        )
    if domain == "#":
        raise ValueError("the domain '#' (every domain) is not supported in a list")
    if not domain.strip("*."):
        raise ValueError(f"the domain {domain!r} names no domain")
    if domain.startswith("*."):
        return patterns.below(patterns.domain_name(domain[2:]))
    if domain.startswith("*"):
        return patterns.string_suffix(patterns.domain_name(domain[1:]))
    return patterns.subtree(patterns.domain_name(domain.removeprefix(".")))
