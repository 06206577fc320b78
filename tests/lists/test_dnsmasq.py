"""dnsmasq files (dnsmasq-china-list, Antifilter, ipset/nftset lists): the domains between
the slashes, whatever follows them, with dnsmasq's own matching meaning."""

from __future__ import annotations

from iptserver.lists import ListFormat, ParsedList
from iptserver.lists.dnsmasq import parse_dnsmasq
from iptserver.policy.domains import DomainMatcher
from iptserver.schema.values import PatternKind


def matched(parsed: ParsedList, name: str) -> set[str]:
    """The texts of the list's patterns that match ``name``."""
    matcher = DomainMatcher([(0, p) for p in parsed.domains])
    return {hit.pattern.text for hit in matcher.match(name)}


CHINA_LIST = """\
# accelerated-domains.china.conf, dnsmasq-china-list
server=/baidu.com/114.114.114.114
server=/.qq.com/114.114.114.114#53
  server = /taobao.com/114.114.114.114
--server=/jd.com/114.114.114.114
server=/baidu.com/223.5.5.5
ipset=/youtube.com/googlevideo.com/vpn4,vpn6
nftset=/instagram.com/4#inet#fw4#vpn,6#inet#fw4#vpn6
address=/ads.example/0.0.0.0
local=/lan.example/
server=/*.wild.example/1.1.1.1
server=/*google.com/8.8.8.8
server=/1.168.192.in-addr.arpa/10.1.2.3
server=/bad..name/ok.example/1.1.1.1
server=//1.1.1.1
server=/#/1.1.1.1
server=/*/1.1.1.1
conf-file=/etc/dnsmasq.d/other.conf
server=1.1.1.1
server=/no-closing-slash.example
no-resolv
"""


def test_each_option_names_its_domains_whatever_the_value() -> None:
    parsed = parse_dnsmasq("china.conf", CHINA_LIST)
    assert parsed.format is ListFormat.DNSMASQ
    assert [(p.kind, p.text) for p in parsed.domains] == [
        (PatternKind.SUBTREE, "baidu.com"),
        (PatternKind.SUBTREE, "qq.com"),
        (PatternKind.SUBTREE, "taobao.com"),
        (PatternKind.SUBTREE, "jd.com"),
        (PatternKind.SUBTREE, "youtube.com"),
        (PatternKind.SUBTREE, "googlevideo.com"),
        (PatternKind.SUBTREE, "instagram.com"),
        (PatternKind.SUBTREE, "ads.example"),
        (PatternKind.SUBTREE, "lan.example"),
        (PatternKind.BELOW, "*.wild.example"),
        (PatternKind.REGEX, "~.*google\\.com$"),
        (PatternKind.SUBTREE, "1.168.192.in-addr.arpa"),
        (PatternKind.SUBTREE, "ok.example"),
    ], "baidu.com a second time (another upstream) is kept once"
    assert list(parsed.domain_lines) == [2, 3, 4, 5, 7, 7, 8, 9, 10, 11, 12, 13, 14]
    assert parsed.networks == (), "the address after the domains is not a network to route"


def test_dnsmasq_matching_meanings() -> None:
    """dnsmasq matches whole labels, ``*.`` only below, and ``*name`` as a string suffix."""
    parsed = parse_dnsmasq("china.conf", CHINA_LIST)
    assert matched(parsed, "baidu.com") == {"baidu.com"}
    assert matched(parsed, "www.baidu.com") == {"baidu.com"}
    assert matched(parsed, "notbaidu.com") == set()
    assert matched(parsed, "r3---sn-abc.googlevideo.com") == {"googlevideo.com"}
    assert matched(parsed, "wild.example") == set()
    assert matched(parsed, "a.wild.example") == {"*.wild.example"}
    assert matched(parsed, "supergoogle.com") == {"~.*google\\.com$"}
    assert matched(parsed, "google.com") == {"~.*google\\.com$"}
    assert matched(parsed, "www.google.com") == {"~.*google\\.com$"}
    assert matched(parsed, "google.com.hk") == set()


def test_malformed_lines_are_reported_on_their_line() -> None:
    parsed = parse_dnsmasq("china.conf", CHINA_LIST)
    found = [(p.line, p.message) for p in parsed.problems]
    assert [line for line, _ in found] == [14, 15, 16, 17, 18, 19, 20, 21]
    messages = dict(found)
    assert "'bad..name' is not a domain name" in messages[14]
    assert "the empty domain '//'" in messages[15]
    assert "the domain '#' (every domain) is not supported" in messages[16]
    assert "the domain '*' names no domain" in messages[17]
    assert "dnsmasq option 'conf-file' is not supported" in messages[18]
    assert "'server=1.1.1.1' names no domain" in messages[19]
    assert "expected server=/DOMAIN/.../VALUE" in messages[20]
    assert "dnsmasq option 'no-resolv' is not supported" in messages[21]
    assert all(p.source == "china.conf" for p in parsed.problems)


def test_antifilter_style_ipset_list_with_crlf() -> None:
    text = "ipset=/rutracker.org/vpn\r\nipset=/Kinozal.TV./vpn\r\n\r\nipset=/x/vpn\r\n"
    parsed = parse_dnsmasq("antifilter.conf", text)
    assert [p.text for p in parsed.domains] == ["rutracker.org", "kinozal.tv", "x"]
    assert list(parsed.domain_lines) == [1, 2, 4]
    assert parsed.problems == ()
