"""DomainMatcher: every pattern kind, and compiled regexes against ``re.match`` itself.

Simple regexes are compiled to hash lookups, a substring trie and string prefix and
suffix tests; the rest are screened by one combined regex. Each of those paths must
give exactly what MRVPN2's ``re.match(regex, name, re.IGNORECASE)`` gave.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iptserver.policy.domains import DomainMatcher
from iptserver.schema.values import DomainPattern, PatternKind, parse_domain_pattern


def matcher(*texts: str) -> DomainMatcher:
    """Pattern ``i`` of ``texts`` belongs to rule ``i``."""
    return DomainMatcher((i, parse_domain_pattern(t)) for i, t in enumerate(texts))


def matched_rules(m: DomainMatcher, name: str) -> list[int]:
    return sorted(hit.rule for hit in m.match(name))


# (pattern as written in a schema, name (lower case, no trailing dot), matches)
CASES = [
    # example.com and .example.com: the name and its subtree
    ("example.com", "example.com", True),
    ("example.com", "www.example.com", True),
    ("example.com", "a.b.example.com", True),
    ("example.com", "myexample.com", False),
    ("example.com", "example.com.evil", False),
    ("example.com", "com", False),
    (".example.com", "example.com", True),
    (".example.com", "deep.www.example.com", True),
    (".example.com", "xexample.com", False),
    ("Example.COM.", "www.example.com", True),
    ("ru", "mail.ru", True),
    ("ru", "ru", True),
    ("ru", "rumble.com", False),
    # *.example.com: strictly below
    ("*.example.com", "example.com", False),
    ("*.example.com", "www.example.com", True),
    ("*.example.com", "a.b.example.com", True),
    ("*.example.com", "wwwexample.com", False),
    # =example.com: that name only
    ("=example.com", "example.com", True),
    ("=example.com", "www.example.com", False),
    ("=example.com", "example.co", False),
    # regex compiled to an exact name
    (r"~www\.example\.com$", "www.example.com", True),
    (r"~www\.example\.com$", "www.example.com.au", False),
    (r"~www\.example\.com$", "xwww.example.com", False),
    (r"~www\.example\.com$", "example.com", False),
    (r"~^www\.x\.com\.?$", "www.x.com", True),
    (r"~^www\.x\.com\.?$", "www.x.com.au", False),
    (r"~^www\.x\.com\.?$", "a.www.x.com", False),
    (r"~WWW\.Example\.COM$", "www.example.com", True),
    (r"~a\-b\.com$", "a-b.com", True),
    (r"~a\-b\.com$", "a-b.com.x", False),
    # regex compiled to "strictly below"
    (r"~.*\.example\.com$", "www.example.com", True),
    (r"~.*\.example\.com$", "a.b.example.com", True),
    (r"~.*\.example\.com$", "example.com", False),
    (r"~.*\.example\.com$", "wwwexample.com", False),
    # regex compiled to "name and subtree"
    (r"~(.*\.)?example\.com$", "example.com", True),
    (r"~(.*\.)?example\.com$", "www.example.com", True),
    (r"~(.*\.)?example\.com$", "myexample.com", False),
    (r"~^(.*\.)?example\.com$", "a.b.example.com", True),
    # the same without $: a prefix, or the literal after any dot
    (r"~(.*\.)?example\.com", "example.community", True),
    (r"~(.*\.)?example\.com", "x.example.com.evil", True),
    (r"~(.*\.)?example\.com", "myexample.com", False),
    # unanchored .*\.ru: ".ru" anywhere (MRVPN2 meaning)
    (r"~.*\.ru", "mail.ru", True),
    (r"~.*\.ru", "x.rumble.com", True),
    (r"~.*\.ru", "ru", False),
    (r"~.*\.ru", "rumble.com", False),
    (r"~.*\.ru\.?$", "mail.ru", True),
    (r"~.*\.ru\.?$", "x.rumble.com", False),
    # .*cdn$: a string suffix; .*cdn: a substring
    (r"~.*cdn$", "cdn", True),
    (r"~.*cdn$", "mycdn", True),
    (r"~.*cdn$", "a.cdn", True),
    (r"~.*cdn$", "cdn.com", False),
    (r"~.*cdn", "static.cdn.com", True),
    (r"~.*my-cdn$", "a.my-cdn", True),
    # a bare prefix: re.match anchors only at the start
    (r"~www\.", "www.x.com", True),
    (r"~www\.", "www", False),
    (r"~www\.", "awww.x.com", False),
    ("~ru", "rumble.com", True),
    ("~ru", "ru", True),
    ("~ru", "x.ru", False),
    ("~RU", "rumble.com", True),
    # complex regexes, matched as written
    (r"~^(www|api)\.svc[0-9]+\.net$", "www.svc1.net", True),
    (r"~^(www|api)\.svc[0-9]+\.net$", "api.svc42.net", True),
    (r"~^(www|api)\.svc[0-9]+\.net$", "ftp.svc1.net", False),
    (r"~^(www|api)\.svc[0-9]+\.net$", "www.svc.net", False),
    (r"~^(www|api)\.svc[0-9]+\.net$", "www.svc1.net.x", False),
    ("~www.example.com", "www.example.com", True),
    ("~www.example.com", "wwwxexample.com", True),
    ("~www.example.com", "www.example.co", False),
    (r"~.*\.(ru|su)$", "mail.su", True),
    (r"~.*\.(ru|su)$", "su", False),
    (r"~[a-z]+\d+\.example\.com$", "host12.example.com", True),
    (r"~[a-z]+\d+\.example\.com$", "host.example.com", False),
    (r"~(?i:MAIL)\.ru$", "mail.ru", True),
    (r"~(?x) mail \. ru $", "mail.ru", True),
    (r"~(?P<l>[a-z])(?P=l)\.com$", "aa.com", True),
    (r"~(?P<l>[a-z])(?P=l)\.com$", "ab.com", False),
    # a literal after "#" is a comment in verbose mode, not a label the name must have
    (r"~(?x) www\.site  # \.org$", "www.site", True),
    (r"~(?x) www\.site  # \.org$", "www.site.org", True),
    # "]" first in a class is a member: the dots and letters after it are in the class
    (r"~[]\.ab\.]x$", "ax", True),
    (r"~[]\.ab\.]x$", "ab.x", False),
]


@pytest.mark.parametrize(
    ("pattern", "name", "expected"), CASES, ids=[f"{p} {n}" for p, n, _ in CASES]
)
def test_pattern(pattern: str, name: str, expected: bool) -> None:
    assert bool(matcher(pattern).match(name)) is expected


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [c for c in CASES if c[0][0] == "~"],
    ids=[f"{p} {n}" for p, n, _ in CASES if p[0] == "~"],
)
def test_regex_cases_agree_with_re_match(pattern: str, name: str, expected: bool) -> None:
    """The table itself is right: each regex row is what ``re.match`` says."""
    assert bool(re.match(pattern[1:], name, re.IGNORECASE)) is expected


# (id, patterns, name, rules that match): patterns sharing one matcher.
TOGETHER = [
    (
        "every-kind-at-once",
        ["example.com", "*.example.com", "=www.example.com", r"~.*\.example\.com$", "~www"],
        "www.example.com",
        [0, 1, 2, 3, 4],
    ),
    ("only-the-subtree", ["example.com", "*.example.com", "=www.example.com"], "example.com", [0]),
    ("two-rules-same-pattern", ["mail.ru", "mail.ru"], "x.mail.ru", [0, 1]),
    ("suffixes-of-several-lengths", [r"~.*cdn$", r"~.*bigcdn$"], "a.bigcdn", [0, 1]),
    ("prefixes-of-several-lengths", [r"~www\.", r"~www\.x\."], "www.x.com", [0, 1]),
    ("substrings-sharing-a-start", [r"~.*\.ru", r"~.*\.rumble"], "a.rumble.com", [0, 1]),
    (
        "complex-with-simple",
        [r"~^(www|api)\.svc[0-9]+\.net$", r"~.*\.net$"],
        "api.svc7.net",
        [0, 1],
    ),
    ("complex-screened-out", [r"~^(www|api)\.svc[0-9]+\.net$", r"~[0-9]+\.org$"], "www.net", []),
    ("second-complex-only", [r"~^(www|api)\.svc[0-9]+\.net$", r"~[0-9]+\.org$"], "42.org", [1]),
    ("backreference-not-combined", [r"~(a)\1\.com$", r"~(b)\1\.com$"], "bb.com", [1]),
    ("conditional-group-in-second-regex", ["~(a)b", "~(c)?(?(1)d|e)"], "cd", [1]),
    ("named-groups-clash", ["~(?P<x>a)b", "~(?P<x>c)d"], "cd", [1]),
]


@pytest.mark.parametrize(
    ("patterns", "name", "expected"), [c[1:] for c in TOGETHER], ids=[c[0] for c in TOGETHER]
)
def test_patterns_together(patterns: list[str], name: str, expected: list[int]) -> None:
    """Patterns compiled into one matcher must not hide or borrow each other's matches."""
    assert sorted(set(matched_rules(matcher(*patterns), name))) == expected


# (id, patterns, name, rules): each matching pattern is reported once, not once per path.
ONCE = [
    ("suffix-longer-than-name", [r"~.*ab$", r"~.*xyzab$"], "ab", [0]),
    ("prefix-longer-than-name", [r"~ab", r"~abxyz"], "ab", [0]),
    ("optional-subtree-unanchored", [r"~(.*\.)?example\.com"], "example.com.example.com", [0]),
    ("substring-twice", [r"~.*\.ru"], "a.ru.ru", [0]),
    ("subtree-at-two-depths", ["example.com"], "example.com", [0]),
]


@pytest.mark.parametrize(
    ("patterns", "name", "expected"), [c[1:] for c in ONCE], ids=[c[0] for c in ONCE]
)
def test_each_pattern_reported_once(patterns: list[str], name: str, expected: list[int]) -> None:
    assert matched_rules(matcher(*patterns), name) == expected


def test_nothing_matches_an_empty_matcher() -> None:
    assert matcher().match("example.com") == []


# -- compiled regexes against re.match -------------------------------------------------

LABELS = ["a", "b", "ru", "rumble", "cdn", "mycdn", "www", "ex-1", "svc1", "com"]

names = st.lists(st.sampled_from(LABELS), min_size=1, max_size=4).map(".".join)


def _escape(literal: str, escape_dash: bool) -> str:
    escaped = literal.replace(".", r"\.")
    return escaped.replace("-", r"\-") if escape_dash else escaped


@st.composite
def literals(draw: st.DrawFn) -> str:
    """Labels joined by dots, sometimes cut mid-label (``umble.co``) or in upper case."""
    text = ".".join(draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=3)))
    start = draw(st.integers(0, len(text) - 1))
    end = draw(st.integers(start + 1, len(text)))
    text = text[start:end] if draw(st.booleans()) else text
    return text.upper() if draw(st.integers(0, 5)) == 0 else text


@st.composite
def simple_regexes(draw: st.DrawFn) -> str:
    """The shapes the matcher compiles to lookups: [^] [lead] literal [\\.?] [$]."""
    caret = draw(st.sampled_from(["", "^"]))
    lead = draw(st.sampled_from(["", ".*", r".*\.", r"(.*\.)?"]))
    body = _escape(draw(literals()), draw(st.booleans()))
    optional_dot = draw(st.sampled_from(["", r"\.?"]))
    end = draw(st.sampled_from(["", "$"]))
    return caret + lead + body + optional_dot + end


@st.composite
def complex_regexes(draw: st.DrawFn) -> str:
    """Shapes the matcher must leave to ``re``: alternations, classes, bare dots, ..."""
    a, b = _escape(draw(literals()), False), _escape(draw(literals()), False)
    lead = draw(st.sampled_from(["", "^", ".*", r".*\.", r"(.*\.)?", ".+", r"[a-z0-9-]+\."]))
    end = draw(st.sampled_from(["", "$", r"\.?$", r"\.[a-z]+$"]))
    middle = draw(
        st.sampled_from(
            [
                f"({a}|{b})",
                f"{a}|{b}",
                f"{a}[a-z0-9]*{b}",
                draw(literals()),  # dots unescaped: any character
                f"{a}(\\.{b})?",
                f"(?:{a})+",
                f"{a}[.-]?{b}",
                f"[a-z]+{b}",
                f"{a}.{{1,3}}{b}",
                # literal labels between dots, some made optional or repeatable
                f"{a}\\.[a-z]+\\.{b}",
                f"{a}\\.?{b}",
                f"{a}\\.*{b}",
                f"{a}\\.+{b}",
                f"{a}\\.{{0,1}}{b}",
                f"{a}?\\.{b}",
                f"{a}\\.(?:{b})?",
                f"(?:{a}\\.)*{b}",
                f"{a}\\.\\w+",
            ]
        )
    )
    return lead + middle + end


regexes = st.one_of(simple_regexes(), complex_regexes())


@settings(max_examples=300)
@given(regexes, names)
def test_regex_matches_like_re_match(regex: str, name: str) -> None:
    found = matcher("~" + regex).match(name)
    assert bool(found) is bool(re.match(regex, name, re.IGNORECASE))


@settings(max_examples=200)
@given(st.lists(regexes, min_size=1, max_size=5), names)
def test_many_regexes_match_like_re_match(regexes: list[str], name: str) -> None:
    """In one matcher, each regex still answers for itself (lookups, trie, screen)."""
    m = matcher(*("~" + r for r in regexes))
    expected = [i for i, r in enumerate(regexes) if re.match(r, name, re.IGNORECASE)]
    assert sorted(set(matched_rules(m, name))) == expected


def reference(pattern: DomainPattern, name: str) -> bool:
    """The pattern kinds as the README defines them."""
    if pattern.kind is PatternKind.EXACT:
        return name == pattern.value
    if pattern.kind is PatternKind.SUBTREE:
        return name == pattern.value or name.endswith("." + pattern.value)
    if pattern.kind is PatternKind.BELOW:
        return name.endswith("." + pattern.value)
    return re.match(pattern.value, name, re.IGNORECASE) is not None


@st.composite
def any_patterns(draw: st.DrawFn) -> str:
    name = ".".join(draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=3)))
    return draw(
        st.one_of(
            st.sampled_from([name, "." + name, "*." + name, "=" + name]),
            regexes.map(lambda r: "~" + r),
        )
    )


@settings(max_examples=200)
@given(st.lists(any_patterns(), min_size=1, max_size=5), names)
def test_mixed_kinds_match_like_reference(texts: Sequence[str], name: str) -> None:
    patterns = [parse_domain_pattern(t) for t in texts]
    m = DomainMatcher(enumerate(patterns))
    expected = [i for i, p in enumerate(patterns) if reference(p, name)]
    assert sorted(set(matched_rules(m, name))) == expected


def test_patterns_of_several_kinds_on_one_name_keep_their_meaning() -> None:
    """One name written exact, then as a subtree, then as names-under (by three rules):
    each keeps what it matches, whatever the order they were added in."""
    patterns = [parse_domain_pattern(t) for t in ("=a.example", "a.example", "*.a.example")]
    for order in ((0, 1, 2), (2, 1, 0), (1, 0, 2), (1, 2, 0)):
        matcher = DomainMatcher((i, patterns[i]) for i in order)
        assert sorted(h.rule for h in matcher.match("a.example")) == [0, 1]
        assert sorted(h.rule for h in matcher.match("b.a.example")) == [1, 2]
