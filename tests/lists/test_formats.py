"""The one entry point: ``format: auto`` told from the name and the text, bytes that are
not UTF-8, and that no input makes a parser raise."""

from __future__ import annotations

import random

import pytest

from iptserver.lists import ListFormat, ListProblem, Origin, detect_format, parse_list
from iptserver.lists.formats import SNIFF_LINES

HOSTS_HEAD = "# hosts\n127.0.0.1 localhost\n::1 localhost\n0.0.0.0 ads.example\n"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        # by the name's extension, whatever the text
        ("rules/telegram.json", "a.example\n", ListFormat.SING_BOX),
        ("geosite-cn.SRS", "", ListFormat.SING_BOX),
        ("https://x.example/r.json?raw=1#top", "a.example\n", ListFormat.SING_BOX),
        # by the text
        ("https://x.example/rules", '  \n{"version": 1, "rules": []}', ListFormat.SING_BOX),
        ("compiled", "SRS\x01binary", ListFormat.SING_BOX),
        ("china.conf", "# c\nserver=/a.com/1.1.1.1\nipset=/b.com/x\n", ListFormat.DNSMASQ),
        ("half", "nftset=/a.com/4#inet#fw4#vpn\nb.com\n", ListFormat.DNSMASQ),
        ("geosite/google", "google.com\nfull:www.google.com\n", ListFormat.V2FLY),
        ("geosite/cn", "baidu.com @cn\nqq.com\n", ListFormat.V2FLY),
        ("geosite/all", "include:google\n", ListFormat.V2FLY),
        ("ipsum", "# c\n10.0.0.0/8\n198.51.100.7  # one\n2001:db8::/32\n", ListFormat.CIDRS),
        ("names", "a.com\nb.org\n", ListFormat.DOMAINS),
        ("mixed", "a.com\n10.0.0.0/8\n", ListFormat.DOMAINS),
        ("hosts", HOSTS_HEAD, ListFormat.DOMAINS),
        ("third", "server=/a.com/1.1.1.1\nb.com\nc.com\n", ListFormat.DOMAINS),
        ("empty", "", ListFormat.DOMAINS),
        ("comments", "# only\n! comments\n", ListFormat.DOMAINS),
    ],
)
def test_format_auto_is_told_from_the_name_and_the_text(
    name: str, text: str, expected: ListFormat
) -> None:
    assert detect_format(name, text) is expected


def test_detection_reads_only_the_first_lines() -> None:
    """A list is not read whole to guess its format: a v2fly rule after the first
    SNIFF_LINES names does not make it a v2fly file (it still parses as a domain line's
    problem, not silently)."""
    names = [f"n{i}.example\n" for i in range(SNIFF_LINES)]
    late = "full:late.example\n"
    assert detect_format("big", "".join(names) + late) is ListFormat.DOMAINS
    assert detect_format("big", "".join(names[:-1]) + late) is ListFormat.V2FLY
    parsed = parse_list("big", "".join(names) + late)
    assert [
        (p.line, "'full:late.example' is not a domain name" in p.message) for p in parsed.problems
    ] == [(SNIFF_LINES + 1, True)]


def test_parse_list_uses_the_detected_format() -> None:
    parsed = parse_list("china.conf", "server=/baidu.com/114.114.114.114\n")
    assert parsed.format is ListFormat.DNSMASQ
    assert [p.text for p in parsed.domains] == ["baidu.com"]
    assert parsed.source == "china.conf"


def test_an_explicit_format_is_not_second_guessed() -> None:
    parsed = parse_list("list.json", "a.example\n10.0.0.0/8\n", ListFormat.DOMAINS)
    assert parsed.format is ListFormat.DOMAINS
    assert [p.text for p in parsed.domains] == ["a.example"]
    cidrs = parse_list("names", "a.example\n10.0.0.0/8\n", ListFormat.CIDRS)
    assert [str(n) for n in cidrs.networks] == ["10.0.0.0/8"]
    assert [p.line for p in cidrs.problems] == [1]


def test_include_is_used_by_v2fly_lists_only() -> None:
    asked: list[str] = []

    def include(name: str) -> str:
        asked.append(name)
        return "included.example\n"

    v2fly = parse_list("geosite/x", "include:other\nown.example\n", include=include)
    assert [p.text for p in v2fly.domains] == ["included.example", "own.example"]
    plain = parse_list("x", "include:other\n", ListFormat.DOMAINS, include=include)
    assert plain.domains == () and len(plain.problems) == 1
    assert asked == ["other"]


# -- bytes -------------------------------------------------------------------------------


def test_bytes_that_are_not_utf8_cost_their_line_only() -> None:
    data = b"good.example\n" + "пример.com\n".encode() + b"bad\xff.example\nok.org\n"
    parsed = parse_list("x.txt", data)
    assert [p.text for p in parsed.domains] == ["good.example", "xn--e1afmkfd.com", "ok.org"]
    assert [p.line for p in parsed.problems] == [3, 3]
    assert parsed.problems[0].message == "bytes that are not UTF-8, read as U+FFFD"
    assert "'bad\ufffd.example' is not a valid domain name" in parsed.problems[1].message


def test_the_line_of_the_first_bad_byte_is_reported_once_per_list() -> None:
    parsed = parse_list("x.conf", b"server=/a.com/1\nserver=/b\xfe.com/1\nserver=/\xff/1\n")
    assert parsed.format is ListFormat.DNSMASQ
    assert [p.text for p in parsed.domains] == ["a.com"]
    assert [(p.line, p.message.startswith("bytes")) for p in parsed.problems] == [
        (2, True),
        (2, False),
        (3, False),
    ]


@pytest.mark.parametrize("data", [b"\xef\xbb\xbfa.example\n", "\ufeffa.example\n"])
def test_a_byte_order_mark_is_no_part_of_the_first_line(data: str | bytes) -> None:
    parsed = parse_list("bom.txt", data)
    assert [p.text for p in parsed.domains] == ["a.example"]
    assert parsed.problems == ()


def test_a_bom_does_not_hide_a_json_rule_set() -> None:
    parsed = parse_list("rules", b'\xef\xbb\xbf{"version": 1, "rules": [{"domain": "a.example"}]}')
    assert parsed.format is ListFormat.SING_BOX
    assert [p.text for p in parsed.domains] == ["=a.example"]


# -- what a caller gets ----------------------------------------------------------------


def test_problems_and_origins_cite_the_list_by_its_name() -> None:
    parsed = parse_list("https://lists.example/ru.txt", "a.example\n\nbad!\nb.example\n")
    (problem,) = parsed.problems
    assert str(problem) == "https://lists.example/ru.txt:3: " + problem.message
    as_problem = problem.as_problem()
    assert (as_problem.file, as_problem.line) == ("https://lists.example/ru.txt", 3)
    assert parsed.domain_origin(1) == Origin("https://lists.example/ru.txt", 4)
    assert str(parsed.domain_origin(0)) == "https://lists.example/ru.txt:1"


def test_duplicates_keep_their_first_line_in_every_format() -> None:
    cases = {
        ListFormat.DOMAINS: "a.example\nb.example\nA.example.\n",
        ListFormat.DNSMASQ: "server=/a.example/1\nserver=/b.example/1\nipset=/a.example/s\n",
        ListFormat.V2FLY: "domain:a.example\nb.example @cn\na.example @ads\n",
    }
    for list_format, text in cases.items():
        parsed = parse_list("dups", text, list_format)
        assert [p.text for p in parsed.domains] == ["a.example", "b.example"], list_format
        assert list(parsed.domain_lines) == [1, 2], list_format
    cidrs = parse_list("dups", "10.0.0.0/8\n::/0\n10.0.0.0/8\n::/0\n0.0.0.0/0\n", ListFormat.CIDRS)
    assert [str(n) for n in cidrs.networks] == ["10.0.0.0/8", "::/0", "0.0.0.0/0"]
    assert list(cidrs.network_lines) == [1, 2, 5]


GARBAGE_PIECES = [
    b"server=/",
    b"/",
    b"include:",
    b"@",
    b"{",
    b'"rules"',
    b"[",
    b":",
    b"#",
    b"\n",
    b"\r\n",
    b"\xff",
    b"\x00",
    b"a.example",
    b"10.0.0.0/8",
    b"::",
    b" ",
    b"regexp:(",
    b"*.",
    b"||",
    b"^",
    b"SRS",
]


@pytest.mark.parametrize("list_format", [f for f in ListFormat if f is not ListFormat.AUTO])
def test_no_input_makes_a_parser_raise(list_format: ListFormat) -> None:
    """A list is someone else's file: whatever it holds comes back as problems."""

    def include(name: str) -> bytes:
        return b"include:" + name.encode() + b"\n@\xff:"  # a loop, and garbage

    rng = random.Random(list_format.value)
    for _ in range(300):
        data = b"".join(rng.choices(GARBAGE_PIECES, k=rng.randrange(1, 30)))
        parsed = parse_list("garbage", data, list_format, include=include)
        assert all(isinstance(p, ListProblem) and p.line >= 1 for p in parsed.problems)
