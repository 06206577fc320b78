"""Each list format, parsed from a sample shaped like the lists people publish: what
entries come out, that they match the names they should (through the policy core's
own matcher), and that malformed lines are reported on their line, never fatal."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from iptserver.lists import ListFormat, ParsedList, detect_format, parse_list
from iptserver.policy.domains import DomainMatcher


def matches(parsed: ParsedList, name: str) -> bool:
    return bool(DomainMatcher((0, p) for p in parsed.domains).match(name))


def problems(parsed: ParsedList) -> list[tuple[int, str]]:
    return [(p.line, p.message) for p in parsed.problems]


def texts(parsed: ParsedList) -> list[str]:
    return [p.text for p in parsed.domains]


# -- plain domains and hosts files ------------------------------------------------------

HOSTS = """\
# Title: a blocklist in hosts format
127.0.0.1 localhost
::1 ip6-localhost ip6-loopback
0.0.0.0 ads.example.com tracker.example.net
0.0.0.0 bad_host!.example.org
! an Adblock-style comment
||doubleclick.example^
*.cdn.example.io
.suffix.example   # trailing comment
example.org
example.org
203.0.113.0/24
neither this nor that
"""


def test_domains_list_with_hosts_lines_adblock_rules_and_comments() -> None:
    parsed = parse_list("hosts.txt", HOSTS, ListFormat.DOMAINS)
    assert texts(parsed) == [
        "=ads.example.com",
        "=tracker.example.net",
        "doubleclick.example",
        "*.cdn.example.io",
        "suffix.example",
        "example.org",
    ], "localhost boilerplate skipped, the duplicate kept once"
    assert list(parsed.domain_lines) == [4, 4, 7, 8, 9, 10]
    assert [str(n) for n in parsed.networks] == ["203.0.113.0/24"]
    assert list(parsed.network_lines) == [12]
    lines = problems(parsed)
    assert [line for line, _ in lines] == [5, 13]
    assert "bad_host!.example.org" in lines[0][1]
    assert "expected one domain a line" in lines[1][1]
    # what a hosts entry means (that name only) and what a bare name means (its subtree)
    assert matches(parsed, "ads.example.com") and not matches(parsed, "x.ads.example.com")
    assert matches(parsed, "www.example.org") and matches(parsed, "example.org")
    assert matches(parsed, "a.cdn.example.io") and not matches(parsed, "cdn.example.io")


def test_cidr_list_of_both_families_with_comments_and_bad_lines() -> None:
    text = (
        "# antifilter-style list\n10.0.0.0/8\n198.51.100.7\n2001:db8::/32\n"
        "203.0.113.1/24\n300.1.1.1/8\n192.0.2.0/24 extra\n"
    )
    parsed = parse_list("ips.lst", text, ListFormat.CIDRS)
    assert [str(n) for n in parsed.networks] == ["10.0.0.0/8", "198.51.100.7/32", "2001:db8::/32"]
    assert [line for line, _ in problems(parsed)] == [5, 6, 7]
    assert "host bits set; did you mean 203.0.113.0/24?" in problems(parsed)[0][1]


# -- dnsmasq --------------------------------------------------------------------------

DNSMASQ = """\
# dnsmasq-china-list style
server=/baidu.com/114.114.114.114
server=/.qq.com/114.114.114.114
ipset=/youtube.com/googlevideo.com/vpn4,vpn6
nftset=/instagram.com/4#inet#fw4#vpn_domains
address=/ads.example/0.0.0.0
local=/lan.example/
server=/*.wild.example/1.1.1.1
server=/*google.com/8.8.8.8
server=/bad..name/1.1.1.1
server=//1.1.1.1
server=/#/1.1.1.1
conf-file=/etc/dnsmasq.d/other.conf
server=1.1.1.1
"""


def test_dnsmasq_lines_name_their_domains_whatever_the_value() -> None:
    parsed = parse_list("china.conf", DNSMASQ, ListFormat.DNSMASQ)
    assert texts(parsed) == [
        "baidu.com",
        "qq.com",
        "youtube.com",
        "googlevideo.com",
        "instagram.com",
        "ads.example",
        "lan.example",
        "*.wild.example",
        "~.*google\\.com$",
    ]
    assert [line for line, _ in problems(parsed)] == [10, 11, 12, 13, 14]
    assert "conf-file" in problems(parsed)[3][1]
    assert matches(parsed, "r3---sn.googlevideo.com")
    assert matches(parsed, "supergoogle.com"), "dnsmasq's *google.com is a string suffix"
    assert not matches(parsed, "wild.example") and matches(parsed, "a.wild.example")


# -- v2fly domain-list-community -------------------------------------------------------


def test_v2fly_rule_types_attributes_and_includes(tmp_path: Path) -> None:
    (tmp_path / "google-ads").write_text("domain:doubleclick.net @ads\nfull:ads.google.com @ads\n")
    (tmp_path / "google-cn").write_text("domain:google.cn @cn\n")
    (tmp_path / "loop").write_text("include:google\n")
    google = """\
# This file is part of domain-list-community
include:google-ads @ads
include:google-cn @-cn
include:missing
include:loop
domain:google.com
full:www.google.com
keyword:googleapis
regexp:^gvt[0-9]\\.com$
regexp:(^|\\.)ggpht\\.com$
youtube.com @!cn
unknown:thing
keyword:bad word!
"""
    (tmp_path / "google").write_text(google)

    def include(name: str) -> bytes:
        return (tmp_path / name).read_bytes()

    parsed = parse_list(str(tmp_path / "google"), google, ListFormat.V2FLY, include=include)
    assert texts(parsed) == [
        "doubleclick.net",
        "=ads.google.com",
        "google.com",
        "=www.google.com",
        "~.*googleapis",
        "~^gvt[0-9]\\.com$",
        "~.*(?:(^|\\.)ggpht\\.com$)",
        "youtube.com",
    ], "google-cn is left out by @-cn"
    assert parsed.domain_sources[:2] == ("google-ads", "google-ads")
    found = [(Path(p.source).name, p.line, p.message) for p in parsed.problems]
    assert [where[:2] for where in found] == [
        ("google", 4),
        ("loop", 1),  # where the loop closes: google -> loop -> google
        ("google", 12),
        ("google", 13),
    ]
    assert "include:missing cannot be read" in found[0][2]
    assert "include loop: google -> loop -> google" in found[1][2]
    assert "unknown rule type 'unknown'" in found[2][2]
    assert matches(parsed, "storage.googleapis.com")
    assert matches(parsed, "gvt1.com") and not matches(parsed, "xgvt1.com")
    assert matches(parsed, "lh3.ggpht.com")
    assert matches(parsed, "www.google.com") and not matches(parsed, "www.google.cn")


# -- sing-box source rule-sets ---------------------------------------------------------


def test_singbox_rule_set_keys_and_unsupported_rules() -> None:
    document = {
        "version": 2,
        "rules": [
            {
                "domain": ["exact.example"],
                "domain_suffix": ["suffix.example", ".below.example"],
                "domain_keyword": "telegram",
                "domain_regex": "^t\\.me$",
            },
            {"ip_cidr": ["91.108.4.0/22", "2001:67c:4e8::/48", "91.108.8.1/22"]},
            {"domain": "ports.example", "port": [443]},
            {"type": "logical", "mode": "and", "rules": []},
            "not an object",
        ],
    }
    text = json.dumps(document, indent=2)
    parsed = parse_list("telegram.json", text)
    assert parsed.format is ListFormat.SING_BOX
    assert texts(parsed) == [
        "=exact.example",
        "suffix.example",
        "*.below.example",
        "~.*telegram",
        "~^t\\.me$",
    ]
    assert [str(n) for n in parsed.networks] == ["91.108.4.0/22", "2001:67c:4e8::/48"]
    # each entry's line, found in the text
    assert parsed.domain_lines[0] == text.splitlines().index('        "exact.example"') + 1
    messages = [message for _, message in problems(parsed)]
    assert any("host bits" in m for m in messages)
    assert any("port" in m and "skipped" in m for m in messages)
    assert any("'logical' rules are not supported" in m for m in messages)
    assert matches(parsed, "web.telegram.org") and matches(parsed, "t.me")
    assert not matches(parsed, "below.example") and matches(parsed, "a.below.example")
    assert not matches(parsed, "ports.example"), "a rule with port applies only with it"


def test_singbox_binary_and_broken_json_are_reported_not_raised() -> None:
    assert "binary rule-set" in problems(parse_list("x.srs", b"SRS\x01\x02"))[0][1]
    broken = parse_list("x.json", '{\n  "version": 1,\n  "rules": [\n    {"domain": }\n]}')
    assert broken.domains == () and problems(broken)[0][0] == 4


# -- detection and bytes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("list.json", "", ListFormat.SING_BOX),
        ("https://x/y?z", '{"version": 1, "rules": []}', ListFormat.SING_BOX),
        ("a.conf", "server=/a.com/1.1.1.1\nipset=/b.com/x\n", ListFormat.DNSMASQ),
        ("geosite", "domain:a.com\nfull:b.com\n", ListFormat.V2FLY),
        ("ips", "# c\n10.0.0.0/8\n2001:db8::1\n", ListFormat.CIDRS),
        ("names", "a.com\nb.org\n", ListFormat.DOMAINS),
    ],
)
def test_format_auto_is_told_from_the_name_and_the_text(
    name: str, text: str, expected: ListFormat
) -> None:
    assert detect_format(name, text) is expected


def test_bytes_that_are_not_utf8_cost_their_line_only() -> None:
    parsed = parse_list("x.txt", b"good.example\nbad\xff.example\nalso.example\n")
    assert texts(parsed) == ["good.example", "also.example"]
    assert {line for line, _ in problems(parsed)} == {2}


def test_a_long_network_list_keeps_its_order_and_lines() -> None:
    nets = [ipaddress.ip_network((0x0B000000 + (i << 8), 24)) for i in range(20_000)]
    parsed = parse_list("big.txt", "\n".join(map(str, nets)), ListFormat.CIDRS)
    assert list(parsed.networks) == nets
    assert parsed.network_lines[-1] == 20_000
