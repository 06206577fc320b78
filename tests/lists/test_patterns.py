"""The mapping of list entry kinds onto the schema's pattern kinds: names checked as the
schema checks them, Go regular expressions keeping their "found anywhere" meaning under
the schema's ``re.match``, and networks read as ipaddress reads them."""

from __future__ import annotations

import ipaddress
import re

import pytest

from iptserver.lists import patterns
from iptserver.policy.domains import DomainMatcher
from iptserver.schema.values import DomainPattern, PatternKind


def matches(pattern: DomainPattern, name: str) -> bool:
    return bool(DomainMatcher([(0, pattern)]).match(name))


# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("example.com", "example.com"),
        (" Example.COM. ", "example.com"),
        ("_dmarc.example.com", "_dmarc.example.com"),
        ("xn--p1ai", "xn--p1ai"),
        ("пример.рф", "xn--e1afmkfd.xn--p1ai"),
        ("1.168.192.in-addr.arpa", "1.168.192.in-addr.arpa"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_domain_name_normalizes(text: str, name: str) -> None:
    assert patterns.domain_name(text) == name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "'' names no domain"),
        ("...", "'...' names no domain"),
        ("a..b", "label '' must be 1-63 letters"),
        ("-a.com", "label '-a' must be 1-63 letters"),
        ("a-.com", "label 'a-' must be 1-63 letters"),
        ("a b.com", "label 'a b' must be 1-63 letters"),
        ("a" * 64 + ".com", "label '" + "a" * 64 + "' must be 1-63"),
        ("10.0.0", "neither an IP address nor a domain name"),
        ("host.123", "last label is never all digits"),
        ("*.example.com", "label '*' must be 1-63 letters"),
    ],
)
def test_domain_name_refuses_what_is_no_name(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        patterns.domain_name(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.com", None),
        ("example.com.", None),
        ("10.0.0.1", None),
        ("host.123", None),
        ("a..b", None),
        ("", None),
    ],
)
def test_plain_name_passes_only_names_already_normalized(text: str, expected: str | None) -> None:
    """The fast path must never let through what ``domain_name`` would refuse or change."""
    assert patterns.plain_name(text) == expected


def test_constructors_give_the_schema_texts() -> None:
    assert patterns.subtree("a.com") == DomainPattern(PatternKind.SUBTREE, "a.com", "a.com")
    assert patterns.below("a.com") == DomainPattern(PatternKind.BELOW, "a.com", "*.a.com")
    assert patterns.exact("a.com") == DomainPattern(PatternKind.EXACT, "a.com", "=a.com")


# -- keywords and string suffixes ----------------------------------------------------------


def test_keyword_is_a_substring_anywhere() -> None:
    google = patterns.keyword("Google")
    assert (google.kind, google.text) == (PatternKind.REGEX, "~.*google")
    assert matches(google, "google.com")
    assert matches(google, "www.supergooglers.net")
    assert not matches(google, "goog.le")
    dotted = patterns.keyword("cdn.ex-ample")
    assert matches(dotted, "a.cdn.ex-ample.org")
    assert not matches(dotted, "a.cdnxex-ample.org"), "a '.' in a keyword is a dot, not any"


@pytest.mark.parametrize("word", ["", "two words", "a*b", "ü"])
def test_keyword_refuses_what_no_name_holds(word: str) -> None:
    with pytest.raises(ValueError, match="must be letters, digits"):
        patterns.keyword(word)


def test_string_suffix_ends_the_name_not_only_at_a_label() -> None:
    suffix = patterns.string_suffix("google.com")
    assert suffix.text == "~.*google\\.com$"
    assert matches(suffix, "google.com")
    assert matches(suffix, "supergoogle.com")
    assert matches(suffix, "mail.google.com")
    assert not matches(suffix, "google.com.hk")
    assert not matches(suffix, "googlexcom")


# -- Go regular expressions --------------------------------------------------------------

GO_REGEXES = [
    "google",
    "^gvt[0-9]\\.com$",
    "\\.cn$",
    "^ad[sx]?\\.",
    "(^|\\.)ggpht\\.com$",
    "^a\\.example$|^b\\.example$",
    "tracker|telemetry",
    "(?i)^WWW\\.",
    "^(.+\\.)?example\\.org$",
]
NAMES = [
    "google.com",
    "gvt1.com",
    "xgvt1.com",
    "www.baidu.cn",
    "cn.example",
    "ads.example",
    "bads.example",
    "lh3.ggpht.com",
    "ggpht.com",
    "xggpht.com",
    "a.example",
    "xa.example",
    "b.example",
    "telemetry.microsoft.com",
    "www.example.org",
    "example.org",
    "notexample.org",
]


@pytest.mark.parametrize("source", GO_REGEXES)
def test_go_regex_keeps_go_meaning_under_re_match(source: str) -> None:
    """Go's MatchString finds the expression anywhere (``re.search``); the schema's
    pattern is run with ``re.match``, and through the policy core's own matcher."""
    pattern = patterns.go_regex(source)
    assert pattern.kind is PatternKind.REGEX
    for name in NAMES:
        expected = re.search(source, name) is not None
        assert (re.match(pattern.value, name) is not None) == expected, name
        assert matches(pattern, name) == expected, name


def test_go_regex_rewrites() -> None:
    assert patterns.go_regex("google").text == "~.*google"
    assert patterns.go_regex("^odd\\.tv$").text == "~^odd\\.tv$"
    assert patterns.go_regex("a|b").text == "~.*(?:a|b)"
    assert patterns.go_regex("(?i)^A").text == "~(?i)^A"
    assert patterns.go_regex("(?i)a|b").text == "~(?i).*(?:a|b)"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "empty regular expression"),
        ("[[:alpha:]]+\\.com", "POSIX classes like [[:alpha:]] are not supported"),
        ("[[:^digit:]]", "POSIX classes"),
        ("(unclosed", "does not compile"),
        ("\\pL+\\.com", "does not compile"),
    ],
)
def test_go_regex_refuses_what_python_would_misread(source: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        patterns.go_regex(source)


# -- networks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("10.0.0.0/8", True),
        ("2001:db8::1", True),
        ("1.2.3", True),
        ("example.com", False),
        ("*.example.com", False),
        ("", False),
    ],
)
def test_looks_like_address(token: str, expected: bool) -> None:
    assert patterns.looks_like_address(token) is expected


@pytest.mark.parametrize(
    "text",
    [
        "0.0.0.0/0",
        "10.0.0.0/8",
        "192.0.2.1",
        "192.0.2.1/32",
        "255.255.255.255",
        "100.64.0.0/10",
        "2001:db8::/32",
        "::1",
        "::ffff:192.0.2.1",
    ],
)
def test_network_reads_as_ipaddress_does(text: str) -> None:
    assert patterns.network(text) == ipaddress.ip_network(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.1/8", "has host bits set; did you mean 10.0.0.0/8?"),
        ("10.0.0.0/33", "prefix length must be 0-32"),
        ("10.0.0.0/x", "prefix length must be 0-32"),
        ("010.0.0.0/8", "'010.0.0.0' is not an IP address"),
        ("1.2.3/24", "'1.2.3' is not an IP address"),
        ("256.1.1.1", "'256.1.1.1' is not an IP address"),
        ("1.2.3.4.5", "'1.2.3.4.5' is not an IP address"),
        ("2001:db8::1/32", "has host bits set; did you mean 2001:db8::/32?"),
        ("2001:db8::/129", "prefix length must be 0-128"),
        ("2001:db8:::1", "is not an IP address"),
    ],
)
def test_network_refusals_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        patterns.network(text)
