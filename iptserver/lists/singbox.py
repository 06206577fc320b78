"""sing-box source rule-sets: the JSON form of a rule-set (``{"version": N, "rules": []}``).

Of each default (headless) rule, the keys a routing list needs:

    domain          EXACT =name
    domain_suffix   "example.com": SUBTREE example.com (sing-box >= 1.9 meaning);
                    ".example.com": BELOW example.com (names ending with ".example.com")
    domain_keyword  REGEX ~.*keyword
    domain_regex    REGEX, the Go expression rewritten for re.match (patterns.go_regex)
    ip_cidr         networks (a bare address is a /32 or /128)

A value may be one string or a list of them, as in sing-box. sing-box ANDs the other
keys of a rule (port, network, source_ip_cidr, query_type, process_name ...) with these,
so a rule holding one of them is reported as not supported and skipped whole: routing
its domains on every port would route more than the list says. ``ip_is_private`` is
ORed, so it alone is reported and the rest of the rule kept. Logical rules and
``invert`` are not supported. The binary form (``.srs``) is refused: compile nothing,
give the source ``.json``.

JSON has no line numbers after parsing; each entry's line is found by looking for it in
the text after the entry before it (the parsed rules keep the text's order).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from iptserver.lists import patterns
from iptserver.lists.model import ListBuilder, ListFormat, ParsedList
from iptserver.schema.values import DomainPattern

VERSIONS = range(1, 5)  # 1: sing-box 1.8, 2: 1.10, 3: 1.11, 4: 1.13
_DOMAIN_KEYS: dict[str, Callable[[str], DomainPattern]] = {
    "domain": lambda v: patterns.exact(patterns.domain_name(v)),
    "domain_suffix": lambda v: (
        patterns.below(patterns.domain_name(v[1:]))
        if v.startswith(".")
        else patterns.subtree(patterns.domain_name(v))
    ),
    "domain_keyword": patterns.keyword,
    "domain_regex": patterns.go_regex,
}
_OR_KEYS_REFUSED = frozenset({"ip_is_private"})


def parse_singbox(source: str, text: str) -> ParsedList:
    out = ListBuilder(source, ListFormat.SING_BOX)
    if text.startswith("SRS"):
        out.problem(1, "a binary rule-set (.srs) is not supported: give its source (.json)")
        return out.build()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        out.problem(e.lineno, f"not JSON: {e.msg} (column {e.colno})")
        return out.build()
    lines = _StringLines(text)
    rules = document.get("rules") if isinstance(document, dict) else None
    if not isinstance(document, dict) or not isinstance(rules, list):
        out.problem(1, 'not a sing-box rule-set: expected {"version": N, "rules": [...]}')
        return out.build()
    version = document.get("version")
    if version not in VERSIONS or isinstance(version, bool):
        out.problem(
            lines.peek("version"),  # "version" may follow the rules: look, do not move
            f"rule-set version {version!r} is not one this parser knows "
            f"({VERSIONS.start}-{VERSIONS.stop - 1}); reading the keys it knows",
        )
    for rule in rules:
        _rule(out, lines, rule)
    return out.build()


def _rule(out: ListBuilder, lines: _StringLines, rule: Any) -> None:
    if not isinstance(rule, dict):
        line = lines.peek(rule) if isinstance(rule, str) else lines.line
        out.problem(line, f"a rule must be a JSON object, not {json.dumps(rule)[:40]}")
        lines.skip(rule)
        return
    line = lines.peek(next(iter(rule))) if rule else lines.line
    if rule.get("type", "default") != "default":
        out.problem(line, f"{rule.get('type')!r} rules are not supported (default rules only)")
        lines.skip(rule)
        return
    if rule.get("invert", False) is not False:
        out.problem(line, "inverted rules ('invert': true) are not supported; rule skipped")
        lines.skip(rule)
        return
    known = {*_DOMAIN_KEYS, "ip_cidr", "type", "invert", *_OR_KEYS_REFUSED}
    unknown = [key for key in rule if key not in known]
    if unknown:
        out.problem(
            line,
            f"rule keys {', '.join(unknown)} are not supported; the rule is skipped, "
            "since its domains and networks apply only together with them",
        )
        lines.skip(rule)
        return
    for key, value in rule.items():
        key_line = lines.find(key)
        if key in _OR_KEYS_REFUSED:
            out.problem(key_line, f"rule key {key} is not supported; the rule's other keys are")
        elif key in _DOMAIN_KEYS or key == "ip_cidr":
            _values(out, lines, key, value)
        else:
            lines.skip(value)


def _values(out: ListBuilder, lines: _StringLines, key: str, value: Any) -> None:
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, str):
            out.problem(lines.line, f"{key}: {json.dumps(item)[:40]} is not a string")
            lines.skip(item)
            continue
        line = lines.find(item)
        try:
            if key == "ip_cidr":
                out.network(patterns.network(item.strip()), line)
            else:
                out.domain(_DOMAIN_KEYS[key](item.strip()), line)
        except ValueError as e:
            out.problem(line, f"{key}: {e}")


class _StringLines:
    """The line of each JSON string, found in document order.

    The parsed document keeps the text's order, so the next occurrence of ``"value"``
    after the last one found is the value's own: one ``str.find`` from a cursor, and
    the newlines counted only between the two.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._at = 0
        self.line = 1  # the line of the last string found

    def peek(self, value: str) -> int:
        """The line ``find`` would give, without moving past it."""
        at, line = self._at, self.line
        found = self.find(value)
        self._at, self.line = at, line
        return found

    def skip(self, value: Any) -> None:
        """Move past every string of a JSON value that is not read (a skipped rule), so
        that the entries after it are not found inside it."""
        if isinstance(value, str):
            self.find(value)
        elif isinstance(value, list):
            for item in value:
                self.skip(item)
        elif isinstance(value, dict):
            for key, item in value.items():
                self.find(key)
                self.skip(item)

    def find(self, value: str) -> int:
        """The line of the next occurrence of ``value`` as a JSON string (or the last
        line found, when its spelling in the text differs from every one tried)."""
        spelling = f'"{value}"'
        at = self._text.find(spelling, self._at)
        if at < 0:
            for spelling in _escaped(value):
                at = self._text.find(spelling, self._at)
                if at >= 0:
                    break
            else:
                return self.line
        self.line += self._text.count("\n", self._at, at)
        self._at = at + len(spelling)
        return self.line


def _escaped(value: str) -> tuple[str, ...]:
    """How json writes a string that holds quotes, backslashes or non-ASCII."""
    return (json.dumps(value, ensure_ascii=False), json.dumps(value))
