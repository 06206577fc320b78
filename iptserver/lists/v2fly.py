"""v2fly domain-list-community data files (the text behind ``geosite:NAME``).

    domain:example.com   SUBTREE example.com (a bare line means the same)
    full:www.example.com EXACT =www.example.com
    keyword:google       REGEX ~.*google (the name contains "google")
    regexp:^odd\\.tv$     REGEX, the Go expression rewritten for re.match (see
                         patterns.go_regex): v2fly finds it anywhere in the name
    include:NAME         the rules of list NAME, read through the caller's ``include``
                         callable; ``include:NAME @ads @-cn`` keeps only its rules that
                         have attribute ads and do not have cn (v2fly's selective
                         inclusion)

``#`` starts a comment anywhere. ``@attr`` after a rule is checked and otherwise
ignored: the whole list is routed, whatever its rules' attributes. ``&NAME``
(affiliation: the rule belongs to list NAME too) is ignored as well; rules that other
files affiliate to this list are not found, since that needs the whole directory.
An include that loops back, or cannot be read, is reported on its line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from iptserver.lists import patterns
from iptserver.lists.model import ListBuilder, ListFormat, ParsedList, decode_text, split_lines
from iptserver.schema.values import DomainPattern

IncludeReader = Callable[[str], str | bytes]
"""Returns the text of the list an ``include:NAME`` names. It raises ``OSError``,
``LookupError`` or ``ValueError`` when there is no such list; that is reported on the
include line."""

RULE_KINDS = ("domain", "full", "keyword", "regexp", "include")
_ATTRIBUTE = re.compile(r"[a-z0-9!]+")
_LIST_NAME = re.compile(r"[A-Za-z0-9!_.-]+")


class _Rule(NamedTuple):  # a tuple: hundreds of thousands are made, and made fast
    pattern: DomainPattern
    source: str
    line: int
    attributes: frozenset[str]


def parse_v2fly(source: str, text: str, include: IncludeReader | None = None) -> ParsedList:
    """The rules of one data file, its includes resolved (entries from an include carry
    the include's NAME as their source)."""
    out = ListBuilder(source, ListFormat.V2FLY)
    reader = _Reader(out, include)
    for rule in reader.rules(source, text, (_list_name(source),)):
        out.domain(rule.pattern, rule.line, rule.source)
    return out.build()


def _list_name(source: str) -> str:
    """``data/google`` or ``https://…/data/google`` is list ``google``."""
    return source.rstrip("/").rpartition("/")[2].lower()


class _Reader:
    """Reads files and their includes once each, and reports what is wrong in them."""

    def __init__(self, out: ListBuilder, include: IncludeReader | None) -> None:
        self._out = out
        self._include = include
        self._resolved: dict[str, list[_Rule]] = {}

    def rules(self, source: str, text: str, stack: tuple[str, ...]) -> list[_Rule]:
        found: list[_Rule] = []
        for number, raw in enumerate(split_lines(text), 1):
            line = raw.partition("#")[0].strip()
            if not line:
                continue
            kind, sep, rest = line.partition(":")
            kind = kind.strip().lower() if sep else "domain"
            rest = rest if sep else line
            try:
                if kind == "include":
                    found += self._included(rest, stack)
                else:
                    found.append(_rule(kind, rest, source, number))
            except ValueError as e:
                self._out.problem(number, str(e), source)
        return found

    def _included(self, rest: str, stack: tuple[str, ...]) -> list[_Rule]:
        fields = rest.split()
        if not fields or not _LIST_NAME.fullmatch(fields[0]):
            raise ValueError(f"include:{rest.strip()} does not name a list")
        name = fields[0]
        must, ban = _include_filter(fields[1:])
        if name.lower() in stack:
            raise ValueError("include loop: " + " -> ".join((*stack, name.lower())))
        rules = self._resolve(name, stack)
        if not must and not ban:
            return rules
        return [r for r in rules if _selected(r.attributes, must, ban)]

    def _resolve(self, name: str, stack: tuple[str, ...]) -> list[_Rule]:
        key = name.lower()
        if key in self._resolved:
            return self._resolved[key]
        if self._include is None:
            raise ValueError(f"include:{name} cannot be read: no directory to include from")
        try:
            data = self._include(name)
        except (OSError, LookupError, ValueError) as e:
            raise ValueError(f"include:{name} cannot be read: {e}") from None
        text, bad_line = decode_text(data)
        if bad_line is not None:
            self._out.problem(bad_line, "bytes that are not UTF-8, read as U+FFFD", name)
        rules = self.rules(name, text, (*stack, key))
        self._resolved[key] = rules
        return rules


def _rule(kind: str, rest: str, source: str, number: int) -> _Rule:
    fields = rest.split()
    if not fields:
        raise ValueError(f"'{kind}:' with nothing after it")
    value = fields[0]
    if kind == "domain":
        pattern = patterns.subtree(patterns.domain_name(value))
    elif kind == "full":
        pattern = patterns.exact(patterns.domain_name(value))
    elif kind == "keyword":
        pattern = patterns.keyword(value)
    elif kind == "regexp":
        pattern = patterns.go_regex(value)
    else:
        raise ValueError(f"unknown rule type {kind!r} (v2fly has {', '.join(RULE_KINDS)})")
    return _Rule(pattern, source, number, _attributes(fields[1:]))


_NO_ATTRIBUTES: frozenset[str] = frozenset()


def _attributes(fields: list[str]) -> frozenset[str]:
    if not fields:
        return _NO_ATTRIBUTES
    attributes: set[str] = set()
    for field in fields:
        if field.startswith("@") and _ATTRIBUTE.fullmatch(field[1:].lower()):
            attributes.add(field[1:].lower())
        elif not (field.startswith("&") and _LIST_NAME.fullmatch(field[1:])):
            raise ValueError(
                f"unexpected {field!r} after the rule: only @attribute and &list may follow"
            )
    return frozenset(attributes)


def _include_filter(fields: list[str]) -> tuple[frozenset[str], frozenset[str]]:
    """``@a @-b``: the attributes included rules must have, and must not have."""
    must: set[str] = set()
    ban: set[str] = set()
    for field in fields:
        attribute = field[1:].lower()
        if not field.startswith("@") or not _ATTRIBUTE.fullmatch(attribute.removeprefix("-")):
            raise ValueError(f"unexpected {field!r} after include: only @attr and @-attr filter")
        if attribute.startswith("-"):
            ban.add(attribute[1:])
        else:
            must.add(attribute)
    return frozenset(must), frozenset(ban)


def _selected(attributes: frozenset[str], must: frozenset[str], ban: frozenset[str]) -> bool:
    """v2fly's selective inclusion: a rule without attributes passes only a filter that
    requires none."""
    if not attributes:
        return not must
    return must <= attributes and not ban & attributes
