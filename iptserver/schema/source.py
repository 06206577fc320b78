"""YAML documents that remember where every key and value was written.

PyYAML's composer gives each node a position; we keep those positions in a map keyed
by the path of the value (``("rules", 2, "nets", 0)``) so that a validation error found
later can name the line and column of the offending value as written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from iptserver.errors import Problem

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass(slots=True)
class Document:
    """Plain Python data (dicts, lists, scalars) plus where each piece was written."""

    file: str
    data: Any
    values: dict[Path, Position] = field(default_factory=dict)
    keys: dict[Path, Position] = field(default_factory=dict)

    def position(self, path: Path, *, key: bool = False) -> Position:
        """Where ``path`` was written; falls back to the nearest enclosing value."""
        if key and path in self.keys:
            return self.keys[path]
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), Position(1, 1))

    def problem(self, path: Path, message: str, *, key: bool = False) -> Problem:
        where = self.position(path, key=key)
        return Problem(self.file, where.line, where.column, format_path(path), message)


def format_path(path: Path) -> str:
    return ".".join(str(part) for part in path)


_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
# libyaml's parser when PyYAML has it: the same nodes and marks, several times faster.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _position(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []
        self._scalars = yaml.SafeLoader("")
        self._open: set[int] = set()  # collections being built: a cycle of aliases

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.doc.values[path] = _position(node)
        if isinstance(node, yaml.ScalarNode):
            return self._scalars.construct_object(node, deep=True)
        if node.tag not in _PLAIN_TAGS:
            self.problems.append(self._problem(node, path, f"unsupported YAML tag {node.tag}"))
            return None
        if id(node) in self._open:
            self.problems.append(self._problem(node, path, "an alias refers to itself"))
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self._open.discard(id(node))

    def _problem(self, node: yaml.Node, path: Path, message: str) -> Problem:
        where = _position(node)
        return Problem(self.doc.file, where.line, where.column, format_path(path), message)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                where = _position(key_node)
                self.problems.append(
                    Problem(
                        self.doc.file,
                        where.line,
                        where.column,
                        format_path(path),
                        "a key must be a plain value, not a list or mapping",
                    )
                )
                continue
            key = self._scalars.construct_object(key_node)
            if not isinstance(key, str | int):
                key = str(key)
            if key in result:
                where = _position(key_node)
                first = self.doc.keys[(*path, key)]
                self.problems.append(
                    Problem(
                        self.doc.file,
                        where.line,
                        where.column,
                        format_path((*path, key)),
                        f"duplicate key {key!r} (first written on line {first.line})",
                    )
                )
                continue
            self.doc.keys[(*path, key)] = _position(key_node)
            result[key] = self.build(value_node, (*path, key))
        return result


def parse_yaml(text: str, file: str) -> tuple[Document, list[Problem]]:
    """Parse ``text``; return the document and the problems found (syntax, duplicates)."""
    doc = Document(file=file, data=None)
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(part for part in (e.context, e.problem) if part)
        if e.context_mark is not None and e.context_mark.line + 1 != line:
            message += f" (the construct began on line {e.context_mark.line + 1})"
        return doc, [Problem(file, line, column, "", f"YAML syntax error: {message}")]
    except yaml.YAMLError as e:
        return doc, [Problem(file, 1, 1, "", f"YAML error: {e}")]
    if root is None:
        return doc, [Problem(file, 1, 1, "", "the file is empty")]
    builder = _Builder(doc)
    try:
        doc.data = builder.build(root, ())
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return doc, [Problem(file, line, column, "", f"YAML error: {e.problem}")]
    return doc, builder.problems
