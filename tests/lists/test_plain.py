"""Plain lists (domains, hosts files, CIDRs), from samples shaped like the published ones:
what comes out, what it matches through the policy core's matcher, and that a malformed
line costs that line only."""

from __future__ import annotations

import ipaddress

from iptserver.lists import ListFormat, ParsedList, parse_list
from iptserver.lists.plain import parse_cidrs, parse_domains
from iptserver.policy.domains import DomainMatcher
from iptserver.schema.values import PatternKind


def matched(parsed: ParsedList, name: str) -> set[str]:
    """The texts of the list's patterns that match ``name``."""
    matcher = DomainMatcher([(0, p) for p in parsed.domains])
    return {hit.pattern.text for hit in matcher.match(name)}


def problem_lines(parsed: ParsedList) -> list[int]:
    return [p.line for p in parsed.problems]


# -- hosts files ------------------------------------------------------------------------

HOSTS = """\
# Title: StevenBlack/hosts
#
127.0.0.1 localhost
127.0.0.1 localhost.localdomain
127.0.0.1 local
255.255.255.255 broadcasthost
::1 localhost ip6-localhost ip6-loopback
fe80::1%lo0 localhost
ff00::0 ip6-localnet
ff02::1 ip6-allnodes
0.0.0.0 0.0.0.0

# Start of entries
0.0.0.0 ads.example.com
0.0.0.0\tTracker.Example.NET  # tabs, upper case and a trailing comment
0.0.0.0 one.example two!.example three.example
0.0.0.0 a.b.123
not-an-address ads.example.com
0.0.0.0 ads.example.com
"""


def test_hosts_file_names_are_exact_and_the_boilerplate_is_skipped() -> None:
    """A hosts entry blocks that one name: routing its subdomains, or localhost, would
    route more than the list says."""
    parsed = parse_domains("hosts", HOSTS)
    assert [p.text for p in parsed.domains] == [
        "=ads.example.com",
        "=tracker.example.net",
        "=one.example",
        "=three.example",
    ]
    assert {p.kind for p in parsed.domains} == {PatternKind.EXACT}
    assert list(parsed.domain_lines) == [14, 15, 16, 16]
    assert parsed.networks == ()
    assert matched(parsed, "ads.example.com") == {"=ads.example.com"}
    assert matched(parsed, "x.ads.example.com") == set()
    assert matched(parsed, "localhost") == set()


def test_hosts_file_bad_names_cost_their_name_only() -> None:
    parsed = parse_domains("hosts", HOSTS)
    assert problem_lines(parsed) == [16, 17, 18]
    bad_name, digits, no_address = (p.message for p in parsed.problems)
    assert "'two!.example' is not a domain name" in bad_name
    assert "last label is never all digits" in digits
    assert "hosts-file line 'ADDRESS NAME...'" in no_address
    assert all(p.source == "hosts" for p in parsed.problems)


# -- domain lists ------------------------------------------------------------------------

DOMAINS = """\
! Title: a mixed list, as keen-pbr and Adblock-style lists publish them
# comment line
example.org
Example.ORG.
.suffix.example
*.cdn.example.io
||doubleclick.example^
||ads.example^$third-party
пример.рф
203.0.113.0/24
2001:db8::/32
198.51.100.7
neither this nor that
bad..name
1.2.3
-dash.example
"""


def test_domain_list_entry_kinds() -> None:
    """A bare name is its subtree; ``*.`` is below it only; networks sit beside names."""
    parsed = parse_domains("mixed.txt", DOMAINS)
    assert [(p.kind, p.value) for p in parsed.domains] == [
        (PatternKind.SUBTREE, "example.org"),
        (PatternKind.SUBTREE, "suffix.example"),
        (PatternKind.BELOW, "cdn.example.io"),
        (PatternKind.SUBTREE, "doubleclick.example"),
        (PatternKind.SUBTREE, "xn--e1afmkfd.xn--p1ai"),
    ], "the second example.org (upper case, trailing dot) is the same name, kept once"
    assert list(parsed.domain_lines) == [3, 5, 6, 7, 9]
    assert [str(n) for n in parsed.networks] == [
        "203.0.113.0/24",
        "2001:db8::/32",
        "198.51.100.7/32",
    ]
    assert list(parsed.network_lines) == [10, 11, 12]


def test_domain_list_matches_what_each_line_means() -> None:
    parsed = parse_domains("mixed.txt", DOMAINS)
    assert matched(parsed, "example.org") == {"example.org"}
    assert matched(parsed, "www.example.org") == {"example.org"}
    assert matched(parsed, "notexample.org") == set()
    assert matched(parsed, "cdn.example.io") == set()
    assert matched(parsed, "img.cdn.example.io") == {"*.cdn.example.io"}
    assert matched(parsed, "suffix.example") == {"suffix.example"}
    assert matched(parsed, "ad.doubleclick.example") == {"doubleclick.example"}
    assert matched(parsed, "www.xn--e1afmkfd.xn--p1ai") == {"xn--e1afmkfd.xn--p1ai"}


def test_domain_list_malformed_lines_are_reported_and_skipped() -> None:
    parsed = parse_domains("mixed.txt", DOMAINS)
    assert problem_lines(parsed) == [8, 13, 14, 15, 16]
    adblock, two_words, empty_label, digits, dash = (p.message for p in parsed.problems)
    assert "only the bare '||example.com^' is supported" in adblock
    assert "expected one domain a line" in two_words
    assert "label '' must be 1-63 letters" in empty_label
    assert "neither an IP address nor a domain name" in digits
    assert "label '-dash' must be 1-63 letters" in dash


def test_windows_line_endings_and_blank_lines_keep_line_numbers() -> None:
    parsed = parse_domains("crlf.txt", "a.example\r\n\r\n  \r\nb.example\r\nbad!\r\n")
    assert [p.text for p in parsed.domains] == ["a.example", "b.example"]
    assert list(parsed.domain_lines) == [1, 4]
    assert problem_lines(parsed) == [5]


def test_empty_and_comment_only_lists_hold_nothing() -> None:
    for text in ("", "\n\n", "# only\n! comments\n"):
        parsed = parse_domains("empty", text)
        assert (parsed.domains, parsed.networks, parsed.problems) == ((), (), ())


# -- CIDR lists --------------------------------------------------------------------------

CIDRS = """\
# antifilter.download ipsum.lst
10.0.0.0/8
198.51.100.7
203.0.113.1/24
2001:db8::/32
2001:db8::1
2001:db8::1/32
300.1.1.1/8
10.1.0.0/33
01.2.3.4
192.0.2.0/24 extra
example.com
10.0.0.0/8    # the same network again, with a comment
"""


def test_cidr_list_of_both_families() -> None:
    parsed = parse_cidrs("ipsum.lst", CIDRS)
    assert parsed.format is ListFormat.CIDRS
    assert parsed.networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("198.51.100.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("2001:db8::1/128"),
    ), "a bare address is one host; the repeated 10.0.0.0/8 kept once"
    assert list(parsed.network_lines) == [2, 3, 5, 6]
    assert parsed.domains == ()


def test_cidr_list_malformed_lines_say_what_is_wrong() -> None:
    parsed = parse_cidrs("ipsum.lst", CIDRS)
    assert problem_lines(parsed) == [4, 7, 8, 9, 10, 11, 12]
    messages = [p.message for p in parsed.problems]
    assert "host bits set; did you mean 203.0.113.0/24?" in messages[0]
    assert "host bits set; did you mean 2001:db8::/32?" in messages[1]
    assert "'300.1.1.1' is not an IP address" in messages[2]
    assert "prefix length must be 0-32" in messages[3]
    assert "'01.2.3.4' is not an IP address" in messages[4]
    assert "expected one network a line" in messages[5]
    assert "'example.com' is not an IP address" in messages[6]


def test_a_long_network_list_keeps_its_order_and_lines() -> None:
    """Lists such as antifilter's hold 100,000s of networks; the fast IPv4 path must give
    the same networks as ipaddress."""
    nets = [ipaddress.ip_network((0x0B000000 + (i << 8), 24)) for i in range(20_000)]
    parsed = parse_list("big.txt", "\n".join(map(str, nets)), ListFormat.CIDRS)
    assert list(parsed.networks) == nets
    assert parsed.network_lines[-1] == 20_000
