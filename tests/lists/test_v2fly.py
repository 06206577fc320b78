"""v2fly domain-list-community data files: rule types, attributes, includes with their
@attr filters, and the Go regular expressions' "found anywhere" meaning."""

from __future__ import annotations

from pathlib import Path

from iptserver.lists import IncludeReader, ListFormat, ParsedList
from iptserver.lists.v2fly import parse_v2fly
from iptserver.policy.domains import DomainMatcher
from iptserver.schema.values import PatternKind


def matched(parsed: ParsedList, name: str) -> set[str]:
    """The texts of the list's patterns that match ``name``."""
    matcher = DomainMatcher([(0, p) for p in parsed.domains])
    return {hit.pattern.text for hit in matcher.match(name)}


def found(parsed: ParsedList) -> list[tuple[str, int, str]]:
    return [(p.source, p.line, p.message) for p in parsed.problems]


GOOGLE = """\
# This file is part of domain-list-community
# https://github.com/v2fly/domain-list-community

domain:google.com
full:www.google.com @cn
keyword:googleapis
regexp:^gvt[0-9]\\.com$
regexp:google\\.com\\.hk
regexp:(^|\\.)ggpht\\.(cn|com)$
youtube.com @ads &youtube
Google.COM   # the same domain again, another spelling
unknown:thing
full:
keyword:bad word!
regexp:[[:alpha:]]+\\.example
regexp:(unclosed
domain:bad..name
domain:fine.example @Not_An_Attribute
domain:last.example
"""


def test_rule_types_become_their_schema_kinds() -> None:
    parsed = parse_v2fly("data/google", GOOGLE)
    assert parsed.format is ListFormat.V2FLY
    assert [(p.kind, p.text) for p in parsed.domains] == [
        (PatternKind.SUBTREE, "google.com"),
        (PatternKind.EXACT, "=www.google.com"),
        (PatternKind.REGEX, "~.*googleapis"),
        (PatternKind.REGEX, "~^gvt[0-9]\\.com$"),
        (PatternKind.REGEX, "~.*google\\.com\\.hk"),
        (PatternKind.REGEX, "~.*(?:(^|\\.)ggpht\\.(cn|com)$)"),
        (PatternKind.SUBTREE, "youtube.com"),
        (PatternKind.SUBTREE, "last.example"),
    ], "a bare line is domain:, attributes and &affiliations are dropped, a repeat kept once"
    assert list(parsed.domain_lines) == [4, 5, 6, 7, 8, 9, 10, 19]
    assert set(parsed.domain_sources) == {"data/google"}


def test_rules_match_as_v2fly_matches_them() -> None:
    parsed = parse_v2fly("data/google", GOOGLE)
    assert matched(parsed, "mail.google.com") == {"google.com"}
    # full: is that name only
    assert matched(parsed, "www.google.com") == {"google.com", "=www.google.com"}
    assert "=www.google.com" not in matched(parsed, "a.www.google.com")
    # keyword: a substring anywhere, not only at a label boundary
    assert matched(parsed, "storage.googleapis.com") == {"~.*googleapis"}
    assert matched(parsed, "xgoogleapisx.net") == {"~.*googleapis"}
    # regexp with ^ is anchored; without ^, Go finds it anywhere in the name
    assert matched(parsed, "gvt1.com") == {"~^gvt[0-9]\\.com$"}
    assert matched(parsed, "xgvt1.com") == set()
    assert matched(parsed, "www.google.com.hk") == {"~.*google\\.com\\.hk"}
    assert matched(parsed, "google.com.hk.example.net") == {"~.*google\\.com\\.hk"}
    # ^ inside an alternation still means the start of the name, as in Go
    assert matched(parsed, "lh3.ggpht.com") == {"~.*(?:(^|\\.)ggpht\\.(cn|com)$)"}
    assert matched(parsed, "ggpht.cn") == {"~.*(?:(^|\\.)ggpht\\.(cn|com)$)"}
    assert matched(parsed, "xggpht.com") == set()
    assert matched(parsed, "google.net") == set()


def test_malformed_rules_are_reported_on_their_line() -> None:
    parsed = parse_v2fly("data/google", GOOGLE)
    problems = found(parsed)
    assert [line for _, line, _ in problems] == [12, 13, 14, 15, 16, 17, 18]
    assert {source for source, _, _ in problems} == {"data/google"}
    messages = [message for _, _, message in problems]
    assert "unknown rule type 'unknown'" in messages[0]
    assert "'full:' with nothing after it" in messages[1]
    assert "unexpected 'word!' after the rule" in messages[2]
    assert "POSIX classes like [[:alpha:]] are not supported" in messages[3]
    assert "does not compile" in messages[4]
    assert "'bad..name' is not a domain name" in messages[5]
    assert "unexpected '@Not_An_Attribute'" in messages[6]


# -- includes ------------------------------------------------------------------------------

DATA = {
    "google-ads": "domain:doubleclick.net @ads\nfull:ads.google.com @ads\ngoogleadservices.com\n",
    "geolocation-cn": "domain:baidu.com @cn\nqq.com\ndomain:bilibili.com @cn @ads\n",
    "category-dev": "include:github\ngitlab.com\n",
    "github": "github.com\ngithubusercontent.com @cn\n",
    "geolocation-!cn": "wikipedia.org\n",
}


def reader(data: dict[str, str]) -> tuple[list[str], IncludeReader]:
    """An include callable backed by a dict, and the names it was asked for."""
    asked: list[str] = []

    def include(name: str) -> str:
        asked.append(name)
        return data[name]

    return asked, include


def test_includes_and_their_attribute_filters() -> None:
    """``@a`` keeps rules that have a; ``@-a`` drops rules that have a (rules without
    attributes pass it); both may be given at once."""
    main = (
        "include:google-ads @ads\n"  # googleadservices.com has no @ads: left out
        "include:geolocation-cn @-cn\n"  # only qq.com has no @cn
        "include:geolocation-cn @ads @-cn\n"  # bilibili has @ads but also @cn: none
        "include:category-dev\n"  # nested: github comes along
        "include:geolocation-!cn\n"  # a real list name, '!' and all
        "domain:own.example\n"
    )
    asked, include = reader(DATA)
    parsed = parse_v2fly("private", main, include)
    assert [p.text for p in parsed.domains] == [
        "doubleclick.net",
        "=ads.google.com",
        "qq.com",
        "github.com",
        "githubusercontent.com",
        "gitlab.com",
        "wikipedia.org",
        "own.example",
    ]
    assert list(zip(parsed.domain_sources, parsed.domain_lines, strict=True)) == [
        ("google-ads", 1),
        ("google-ads", 2),
        ("geolocation-cn", 2),
        ("github", 1),
        ("github", 2),
        ("category-dev", 2),
        ("geolocation-!cn", 1),
        ("private", 6),
    ], "an included rule is cited in its own file"
    assert asked == ["google-ads", "geolocation-cn", "category-dev", "github", "geolocation-!cn"], (
        "geolocation-cn is read once, though included twice"
    )
    assert parsed.problems == ()


def test_includes_read_from_a_directory(tmp_path: Path) -> None:
    (tmp_path / "netflix").write_text("netflix.com\nfull:nflxvideo.net @cdn\nbad!name\n")
    (tmp_path / "hulu").write_bytes(b"hulu.com\nhulu\xff.tv\nhuluim.com\n")
    main = "include:netflix @cdn\ninclude:hulu\n"

    def include(name: str) -> bytes:
        return (tmp_path / name).read_bytes()

    parsed = parse_v2fly(str(tmp_path / "streaming"), main, include)
    assert [p.text for p in parsed.domains] == ["=nflxvideo.net", "hulu.com", "huluim.com"]
    problems = found(parsed)
    assert [(source, line) for source, line, _ in problems] == [
        ("netflix", 3),
        ("hulu", 2),
        ("hulu", 2),
    ], "problems of an included file are cited in that file, filtered out or not"
    assert "'bad!name' is not a domain name" in problems[0][2]
    assert problems[1][2] == "bytes that are not UTF-8, read as U+FFFD"
    assert "'hulu\ufffd.tv' is not a valid domain name" in problems[2][2]


def test_include_loops_are_reported_where_they_close() -> None:
    data = {"a": "a.example\ninclude:b\n", "b": "include:a\nb.example\n", "self": "include:self\n"}
    _, include = reader(data)
    parsed = parse_v2fly("data/a", "include:a\ninclude:b\ninclude:self\nmain.example\n", include)
    assert [p.text for p in parsed.domains] == ["b.example", "main.example"]
    assert found(parsed) == [
        ("data/a", 1, "include loop: a -> a"),
        ("b", 1, "include loop: a -> b -> a"),
        ("self", 1, "include loop: a -> self -> self"),
    ]


def test_a_diamond_of_includes_is_no_loop() -> None:
    data = {"left": "include:base\n", "right": "include:base\n", "base": "base.example\n"}
    asked, include = reader(data)
    parsed = parse_v2fly("top", "include:left\ninclude:right\n", include)
    assert [p.text for p in parsed.domains] == ["base.example"]
    assert parsed.problems == ()
    assert asked.count("base") == 1


def test_an_include_that_cannot_be_read_costs_its_line(tmp_path: Path) -> None:
    def include(name: str) -> str:
        return (tmp_path / name).read_text()

    text = "before.example\ninclude:missing\ninclude:\ninclude:x @\nafter.example\n"
    parsed = parse_v2fly("top", text, include)
    assert [p.text for p in parsed.domains] == ["before.example", "after.example"]
    problems = found(parsed)
    assert [line for _, line, _ in problems] == [2, 3, 4]
    assert problems[0][2].startswith("include:missing cannot be read: ")
    assert "No such file" in problems[0][2]
    assert "does not name a list" in problems[1][2]
    assert "unexpected '@' after include" in problems[2][2]

    without = parse_v2fly("top", text)
    assert [p.text for p in without.domains] == ["before.example", "after.example"]
    assert "no directory to include from" in found(without)[0][2]
