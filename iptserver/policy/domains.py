"""Match a DNS name against every domain pattern of a schema at once.

Exact names and suffixes are hash lookups on the name's label boundaries. Regular
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

Substrings are found with a character trie walked from each position where a literal
can start; the remaining (complex) regexes are screened by one combined regex first.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from iptserver.schema.values import DomainPattern, PatternKind

_SIMPLE_REGEX = re.compile(
    r"""^\^?
    (?P<lead>\.\*\\\.|\(\.\*\\\.\)\?|\.\*)?
    (?P<body>(?:[a-z0-9_]|\\[.-]|-)+)
    (?:\\\.\?)?
    (?P<end>\$)?$""",
    re.IGNORECASE | re.VERBOSE,
)
_NOT_COMBINABLE = re.compile(r"\\[1-9]|\(\?P=|^\(\?[a-zA-Z]+\)")


@dataclass(frozen=True, slots=True)
class Hit:
    rule: int
    pattern: DomainPattern


Hits = list[Hit]
_TERMINAL = ""


class DomainMatcher:
    def __init__(self, patterns: Iterable[tuple[int, DomainPattern]]) -> None:
        self._exact: dict[str, Hits] = defaultdict(list)
        self._subtree: dict[str, Hits] = defaultdict(list)
        self._below: dict[str, Hits] = defaultdict(list)
        self._endswith: dict[str, Hits] = defaultdict(list)
        self._startswith: dict[str, Hits] = defaultdict(list)
        self._trie: dict[str, dict] = {}  # type: ignore[type-arg]
        self._complex: list[tuple[re.Pattern[str], Hit]] = []
        for rule, pattern in patterns:
            self._add(Hit(rule, pattern))
        self._suffix_lengths = sorted({len(k) for k in self._endswith})
        self._prefix_lengths = sorted({len(k) for k in self._startswith})
        self._trie_starts = frozenset(self._trie)
        self._screen = _combine([regex for regex, _ in self._complex])
        self._has_suffixes = bool(self._subtree or self._below)

    def _add(self, hit: Hit) -> None:
        kind, value = hit.pattern.kind, hit.pattern.value
        if kind is PatternKind.EXACT:
            self._exact[value].append(hit)
        elif kind is PatternKind.SUBTREE:
            self._subtree[value].append(hit)
        elif kind is PatternKind.BELOW:
            self._below[value].append(hit)
        else:
            self._add_regex(hit)

    def _add_regex(self, hit: Hit) -> None:
        simple = _SIMPLE_REGEX.match(hit.pattern.value)
        if simple is None:
            self._complex.append((re.compile(hit.pattern.value, re.IGNORECASE), hit))
            return
        body = simple["body"].replace("\\", "").lower()
        lead, anchored = simple["lead"], bool(simple["end"])
        if lead is None:
            (self._exact if anchored else self._startswith)[body].append(hit)
        elif lead == ".*":
            if anchored:
                self._endswith[body].append(hit)
            else:
                self._add_substring(body, hit)
        elif lead == ".*\\.":
            if anchored:
                self._below[body].append(hit)
            else:
                self._add_substring("." + body, hit)
        elif anchored:  # (.*\.)?body$
            self._subtree[body].append(hit)
        else:
            self._startswith[body].append(hit)
            self._add_substring("." + body, hit)

    def _add_substring(self, literal: str, hit: Hit) -> None:
        node = self._trie
        for char in literal:
            node = node.setdefault(char, {})
        node.setdefault(_TERMINAL, []).append(hit)

    def match(self, name: str) -> Hits:
        """Every pattern that matches ``name`` (lower case, no trailing dot)."""
        found: Hits = []
        hits = self._exact.get(name)
        if hits:
            found += hits
        if self._has_suffixes:
            hits = self._subtree.get(name)
            if hits:
                found += hits
            dot = name.find(".")
            while dot >= 0:
                suffix = name[dot + 1 :]
                hits = self._subtree.get(suffix)
                if hits:
                    found += hits
                hits = self._below.get(suffix)
                if hits:
                    found += hits
                dot = name.find(".", dot + 1)
        for length in self._suffix_lengths:
            hits = self._endswith.get(name[-length:])
            if hits:
                found += hits
        for length in self._prefix_lengths:
            hits = self._startswith.get(name[:length])
            if hits:
                found += hits
        if self._trie_starts:
            found += self._substrings(name)
        if self._complex and (self._screen is None or self._screen.match(name)):
            found += [hit for regex, hit in self._complex if regex.match(name)]
        return found

    def _substrings(self, name: str) -> Hits:
        found: Hits = []
        starts = self._trie_starts
        for position, char in enumerate(name):
            if char not in starts:
                continue
            node = self._trie
            for c in name[position:]:
                node = node.get(c)  # type: ignore[assignment]
                if node is None:
                    break
                hits = node.get(_TERMINAL)
                if hits:
                    found += hits
        # A literal found at two positions is still one match.
        return list(dict.fromkeys(found))


def _combine(regexes: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One regex that matches when any of ``regexes`` does, to skip them all at once."""
    if not regexes or any(_NOT_COMBINABLE.search(r.pattern) for r in regexes):
        return None
    try:
        return re.compile("|".join(f"(?:{r.pattern})" for r in regexes), re.IGNORECASE)
    except re.error:
        return None
