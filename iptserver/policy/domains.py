"""Match a DNS name against every domain pattern of a schema at once.

Exact names and suffixes are hash lookups at the name's label boundaries. Regular
expressions (MRVPN2 semantics: ``re.match`` on the lower-case name without the trailing
dot) are compiled, when they are simple, to the same lookups:

    =========================  ==========================================
    regex                      compiled to
    =========================  ==========================================
    ``www\\.example\\.com$``     exact name
    ``.*\\.example\\.com$``      names under example.com
    ``(.*\\.)?example\\.com$``   example.com and the names under it
    ``.*\\.ru``                  ".ru" anywhere in the name (MRVPN2 meaning:
                               this also matches ``x.rumble.com``)
    ``.*cdn$`` / ``www\\.``      string suffix / string prefix
    =========================  ==========================================

Every other test (a literal somewhere in the name, a complex regex) is filed under a
label that any matching name must contain whole (``site17`` for ``.*\\.site17\\.org``),
and only run for names that have that label. Literals too short to hold a whole label
are looked up by the prefix or suffix of a label. What is left is screened by one
combined regex, so a name that matches none of them costs one regex call.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import NamedTuple

from iptserver.schema.values import DomainPattern, PatternKind

_SIMPLE_REGEX = re.compile(
    r"""^\^?
    (?P<lead>\.\*\\\.|\(\.\*\\\.\)\?|\.\*)?
    (?P<body>(?:[a-z0-9_]|\\[.-]|-)+)
    (?:\\\.\?)?
    (?P<end>\$)?$""",
    re.IGNORECASE | re.VERBOSE,
)
# Group references (backreferences, conditionals) and leading global flags change
# meaning inside a combined regex; such regexes are run on their own.
_NOT_COMBINABLE = re.compile(r"\\[1-9]|\(\?P=|\(\?\(|^\(\?[a-zA-Z]+\)")
# A literal label of a regex: after a dot (or at the start) and before a dot or "$".
_INLINE_FLAGS = re.compile(r"\(\?[aiLmsux-]+[:)]")
_LABEL_RUN = re.compile(r"(?:^\^?|\\\.)([a-z0-9_-]+)(?=\\\.(?![?*{])|\$)", re.IGNORECASE)


class Hit(NamedTuple):  # a tuple: lists make 100,000s, and a tuple is made fastest
    rule: int
    pattern: DomainPattern


Hits = list[Hit]
_NO_HITS: tuple[tuple[Hit, ...], tuple[Hit, ...]] = ((), ())
Test = Callable[[str], object]


class _Where:
    """Where a literal must sit in a name (for the literal compiled from a simple regex)."""

    START = "start"  # name.startswith(literal)
    END = "end"  # name.endswith(literal)
    AFTER_DOT = "after-dot"  # "." + literal in name
    ANYWHERE = "anywhere"  # literal in name


class DomainMatcher:
    def __init__(self, patterns: Iterable[tuple[int, DomainPattern]]) -> None:
        # name -> (hits when it is the whole name, hits when it is a proper suffix)
        self._names: dict[str, tuple[tuple[Hit, ...], tuple[Hit, ...]]] = {}
        self._by_label: dict[str, list[tuple[Test, Hit]]] = defaultdict(list)
        self._first_label_prefix: dict[str, Hits] = defaultdict(list)
        self._later_label_prefix: dict[str, Hits] = defaultdict(list)
        self._last_label_suffix: dict[str, Hits] = defaultdict(list)
        self._unindexed: list[tuple[Test, Hit]] = []
        self._screened: list[tuple[re.Pattern[str], Hit]] = []
        names, subtree = self._names, PatternKind.SUBTREE
        for rule, pattern in patterns:
            hit = Hit(rule, pattern)
            if pattern.kind is subtree and pattern.value not in names:  # most list entries
                alone = (hit,)
                names[pattern.value] = (alone, alone)
            else:
                self._add(hit)
        self._has_suffixes = any(below for _, below in self._names.values())
        self._first_lengths = sorted({len(k) for k in self._first_label_prefix})
        self._later_lengths = sorted({len(k) for k in self._later_label_prefix})
        self._last_lengths = sorted({len(k) for k in self._last_label_suffix})
        self._screen = _combine([regex for regex, _ in self._screened])
        if self._screen is None:  # they could not be combined: run each
            self._unindexed += [(regex.match, hit) for regex, hit in self._screened]
            self._screened = []

    def _add(self, hit: Hit) -> None:
        kind, value = hit.pattern.kind, hit.pattern.value
        if kind is PatternKind.REGEX:
            self._add_regex(hit)
            return
        whole, below = self._names.get(value, _NO_HITS)
        if kind is not PatternKind.BELOW:
            whole = (*whole, hit)
        if kind is not PatternKind.EXACT:
            # A subtree alone on its name shares one tuple: lists put 100,000s here.
            alone = not below and len(whole) == 1 and whole[0] is hit
            below = whole if alone else (*below, hit)
        self._names[value] = (whole, below)

    def _add_regex(self, hit: Hit) -> None:
        simple = _SIMPLE_REGEX.match(hit.pattern.value)
        if simple is None:
            regex = re.compile(hit.pattern.value, re.IGNORECASE)
            label = _required_label(regex.pattern)
            if label is not None:
                self._by_label[label].append((regex.match, hit))
            elif _NOT_COMBINABLE.search(regex.pattern):
                self._unindexed.append((regex.match, hit))
            else:
                self._screened.append((regex, hit))
            return
        body = simple["body"].replace("\\", "").lower()
        lead, anchored = simple["lead"], bool(simple["end"])
        if lead is None and anchored:
            self._add_name(body, hit, whole=True, below=False)
        elif lead is None:
            self._add_literal(body, _Where.START, hit)
        elif lead == ".*":
            self._add_literal(body, _Where.END if anchored else _Where.ANYWHERE, hit)
        elif lead == ".*\\.":
            if anchored:
                self._add_name(body, hit, whole=False, below=True)
            else:
                self._add_literal(body, _Where.AFTER_DOT, hit)
        elif anchored:  # (.*\.)?body$
            self._add_name(body, hit, whole=True, below=True)
        else:  # (.*\.)?body: at the start, or after a dot
            self._add_literal(body, _Where.START, hit)
            self._add_literal(body, _Where.AFTER_DOT, hit)

    def _add_name(self, name: str, hit: Hit, *, whole: bool, below: bool) -> None:
        held_whole, held_below = self._names.get(name, _NO_HITS)
        self._names[name] = (
            (*held_whole, hit) if whole else held_whole,
            (*held_below, hit) if below else held_below,
        )

    def _add_literal(self, literal: str, where: str, hit: Hit) -> None:
        fragments = literal.split(".")
        # Which fragments are whole labels of any name holding the literal there.
        first = 0 if where in (_Where.START, _Where.AFTER_DOT) else 1
        last = len(fragments) if where == _Where.END else len(fragments) - 1
        whole = [f for f in fragments[first:last] if f]
        if whole:
            test: Test = {
                _Where.START: lambda name: name.startswith(literal),
                _Where.END: lambda name: name.endswith(literal),
                _Where.AFTER_DOT: lambda name: "." + literal in name,
                _Where.ANYWHERE: lambda name: literal in name,
            }[where]
            self._by_label[max(whole, key=len)].append((test, hit))
        elif where == _Where.START:
            self._first_label_prefix[literal].append(hit)
        elif where == _Where.AFTER_DOT:
            self._later_label_prefix[literal].append(hit)
        elif where == _Where.END:
            self._last_label_suffix[literal].append(hit)
        else:
            self._unindexed.append((lambda name: literal in name, hit))

    def match(self, name: str) -> Hits:
        """Every pattern that matches ``name`` (lower case, no trailing dot), once each."""
        found: Hits = []
        entry = self._names.get(name)
        if entry is not None:
            found += entry[0]
        if self._has_suffixes:
            dot = name.find(".")
            while dot >= 0:
                entry = self._names.get(name[dot + 1 :])
                if entry is not None:
                    found += entry[1]
                dot = name.find(".", dot + 1)
        labels = name.split(".")
        if self._by_label:
            for label in labels:
                for test, hit in self._by_label.get(label, ()):
                    if test(name):
                        found.append(hit)
        if self._first_lengths:
            found += _label_affixes(labels[0], self._first_label_prefix, self._first_lengths)
        if self._later_lengths:
            for label in labels[1:]:
                found += _label_affixes(label, self._later_label_prefix, self._later_lengths)
        if self._last_lengths:
            found += _label_affixes(
                labels[-1], self._last_label_suffix, self._last_lengths, suffix=True
            )
        for test, hit in self._unindexed:
            if test(name):
                found.append(hit)
        if self._screen is not None and self._screen.match(name):
            found += [hit for regex, hit in self._screened if regex.match(name)]
        # A literal can be found at two places of one name; report each pattern once.
        return list(dict.fromkeys(found)) if len(found) > 1 else found


def _label_affixes(
    label: str, table: dict[str, Hits], lengths: list[int], suffix: bool = False
) -> Hits:
    found: Hits = []
    for length in lengths:
        if length > len(label):
            break
        hits = table.get(label[-length:] if suffix else label[:length])
        if hits:
            found += hits
    return found


def _required_label(pattern: str) -> str | None:
    """A whole label every name matching ``pattern`` has, if one can be read off safely.

    Only literals at the top level of a pattern without top-level alternation count, and
    only when a dot (or the start: ``re.match`` anchors there) precedes them and a dot or
    ``$`` follows.
    """
    if _INLINE_FLAGS.search(pattern) or "\\\\" in pattern:
        return None  # verbose mode changes what text means; "\\." is not an escaped dot
    depth, escaped, in_class = 0, False, False
    class_start = -1  # where the current [...] opened: "]" or "^]" right after is literal
    top_level: list[bool] = []
    for i, char in enumerate(pattern):
        top_level.append(depth == 0 and not in_class)
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            opening = i == class_start + 1 or (i == class_start + 2 and pattern[i - 1] == "^")
            in_class = char != "]" or opening
        elif char == "[":
            in_class, class_start = True, i
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return None
    labels = [
        m.group(1).lower()
        for m in _LABEL_RUN.finditer(pattern)
        if all(top_level[m.start() : m.end()])
    ]
    return max(labels, key=len) if labels else None


def _combine(regexes: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One regex that matches when any of ``regexes`` does, to skip them all at once."""
    if not regexes:
        return None
    try:
        return re.compile("|".join(f"(?:{r.pattern})" for r in regexes), re.IGNORECASE)
    except re.error:
        return None
