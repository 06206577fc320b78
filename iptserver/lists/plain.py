"""Plain lists: one domain a line (hosts-file lines too), or one network a line.

Domains list, line by line:

    example.com            SUBTREE: the name and every name under it
    .example.com           SUBTREE (the leading dot changes nothing, as in the schema)
    *.example.com          BELOW: names under it only
    ||example.com^         SUBTREE (the Adblock "domain and subdomains" rule, bare)
    0.0.0.0 a.com b.com    hosts-file line: EXACT a.com, EXACT b.com (a hosts entry is
                           that name only); the address is ignored, and so are the
                           boilerplate names localhost, broadcasthost, ip6-* ...
    203.0.113.0/24         a network (lists such as keen-pbr's mix them with names)

``#`` starts a comment anywhere on a line, ``!`` at its start; blank lines are skipped.
A CIDRs list takes only networks and bare addresses, with the same comments.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from iptserver.lists import patterns
from iptserver.lists.model import ListBuilder, ListFormat, ParsedList, split_lines
from iptserver.schema.values import DomainPattern

# Names every hosts file starts with; routing them would be a mistake, not the list's aim.
HOSTS_BOILERPLATE = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "local",
        "broadcasthost",
        "ip6-localhost",
        "ip6-loopback",
        "ip6-localnet",
        "ip6-mcastprefix",
        "ip6-allnodes",
        "ip6-allrouters",
        "ip6-allhosts",
        "0.0.0.0",
    }
)


def content_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, content)`` of each line that holds anything but a comment."""
    for number, raw in enumerate(split_lines(text), 1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        if "#" in line:
            line = line.partition("#")[0].rstrip()
        yield number, line


def parse_domains(source: str, text: str) -> ParsedList:
    """A list of domains (and hosts-file lines, and networks), see the module docstring."""
    out = ListBuilder(source, ListFormat.DOMAINS)
    plain_name = patterns.plain_name
    for number, line in content_lines(text):
        if (name := plain_name(line)) is not None:  # most lines: a bare name
            out.domain(patterns.subtree(name), number)
            continue
        try:
            if " " in line or "\t" in line:
                _hosts_line(out, number, line.split())
            elif patterns.looks_like_address(line) and _is_address(line.partition("/")[0]):
                out.network(patterns.network(line), number)
            else:
                out.domain(_domain_entry(line), number)
        except ValueError as e:
            out.problem(number, str(e))
    return out.build()


def _domain_entry(token: str) -> DomainPattern:
    if token.startswith("*."):
        return patterns.below(patterns.domain_name(token[2:]))
    if token.startswith("||"):
        if not token.endswith("^") or "$" in token or "/" in token:
            raise ValueError(
                f"{token!r}: of Adblock rules only the bare '||example.com^' is supported"
            )
        token = token[2:-1]
    return patterns.subtree(patterns.domain_name(token.removeprefix(".")))


def _hosts_line(out: ListBuilder, number: int, tokens: list[str]) -> None:
    if not _is_address(tokens[0]):
        raise ValueError(
            f"expected one domain a line, or a hosts-file line 'ADDRESS NAME...', not "
            f"{' '.join(tokens)!r}"
        )
    for token in tokens[1:]:
        if token.lower() in HOSTS_BOILERPLATE:
            continue
        try:
            out.domain(patterns.exact(patterns.domain_name(token)), number)
        except ValueError as e:  # one bad name does not spoil the others on its line
            out.problem(number, str(e))


def _is_address(token: str) -> bool:
    try:
        ipaddress.ip_address(token)
    except ValueError:
        return False
    return True


def parse_cidrs(source: str, text: str) -> ParsedList:
    """A list of networks (CIDR) and bare addresses, IPv4 and IPv6, one a line."""
    out = ListBuilder(source, ListFormat.CIDRS)
    for number, line in content_lines(text):
        if " " in line or "\t" in line:
            out.problem(number, f"expected one network a line, not {line!r}")
            continue
        try:
            out.network(patterns.network(line), number)
        except ValueError as e:
            out.problem(number, str(e))
    return out.build()
