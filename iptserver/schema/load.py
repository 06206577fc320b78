"""Read a routing schema file (native or legacy), validate it once, report every problem.

Errors name the file, the line and column of the offending value as written, and the
path of the field in the file's own terms (``routes.3.net.0`` for a legacy file).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from functools import cache
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from iptserver.errors import Problem, SchemaError
from iptserver.schema.entries import Resolver, entry_interface_problems, ingress_everywhere
from iptserver.schema.legacy import Format, Translation, detect_format, translate
from iptserver.schema.mesh import ingress_problems, mesh_problems, policy_problems
from iptserver.schema.model import Schema
from iptserver.schema.source import Document, Path, parse_yaml
from iptserver.schema.values import IPAddress

if TYPE_CHECKING:
    from iptserver.lists.store import ListRead


@dataclass(frozen=True)
class Loaded:
    schema: Schema
    format: Format
    file: str
    # Things that are not errors but that the operator should know (ignored legacy keys).
    notes: list[Problem] = field(default_factory=list)
    # Native path -> line in the file, for explain to cite rules by line.
    rule_lines: tuple[int, ...] = ()
    # (rule, list) -> (line, column) of that list's file or url, for errors about it.
    list_lines: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    # Each list the rules name, by location, once read (iptserver.lists.store).
    lists: dict[str, ListRead] = field(default_factory=dict)


def load_schema(path: str | FilePath) -> Loaded:
    name = str(path)
    try:
        text = FilePath(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SchemaError([Problem(name, 1, 1, "", f"cannot read the file: {e}")]) from e
    return parse_schema(text, name)


def parse_schema(text: str, file: str = "<schema>") -> Loaded:
    doc, problems = parse_yaml(text, file)
    if doc.data is None:
        raise SchemaError(problems)
    if not isinstance(doc.data, dict):
        raise SchemaError([*problems, doc.problem((), "the top level must be a mapping")])
    fmt = detect_format(doc.data)
    if fmt is None:
        raise SchemaError(
            [
                *problems,
                doc.problem(
                    (),
                    (
                        "cannot tell the format: expected 'exits' and 'rules' (native), 'routes' "
                        "(ipt-server settings.yaml) or 'routing' (MRVPN2 schema)"
                    ),
                ),
            ]
        )
    if fmt is Format.NATIVE:
        translation = Translation(data=doc.data)
    else:
        translation = translate(doc, fmt)
        problems += translation.problems
    problems += _cross_check(doc, translation)
    schema: Schema | None = None
    try:
        schema = Schema.model_validate(translation.data)
    except ValidationError as e:
        problems += [_problem(doc, translation, error) for error in e.errors()]
    if schema is not None:
        problems += [
            doc.problem(translation.legacy_path(path), message)
            for path, message in mesh_problems(schema.nodes, schema.tunnels, schema.clients)
            + ingress_problems(schema.nodes, schema.tunnels, ingress_everywhere(schema))
            + entry_interface_problems(schema)
            + policy_problems(schema.nodes, schema.kernel.export_table, schema.kernel.policy_table)
        ]
        problems += [
            doc.problem(translation.legacy_path(path), message)
            for path, message in _source_problems(schema) + _probe6_problems(schema)
        ]
    if problems or schema is None:
        raise SchemaError(problems)
    lines = tuple(
        doc.position(translation.legacy_path(("rules", i))).line for i in range(len(schema.rules))
    )
    list_lines = {}
    for i, rule in enumerate(schema.rules):
        for j, spec in enumerate(rule.lists):
            where = ("rules", i, "lists", j, "file" if spec.file is not None else "url")
            position = doc.position(translation.legacy_path(where))
            list_lines[(i, j)] = (position.line, position.column)
    return Loaded(schema, fmt, file, translation.notes, lines, list_lines)


def _cross_check(doc: Document, t: Translation) -> list[Problem]:
    """Checks that span fields: every exit referenced is defined, marks/tables unique."""
    problems: list[Problem] = []
    exits = t.data.get("exits")
    names = set(exits) if isinstance(exits, dict) else set()

    def check_ref(path: Path, value: Any) -> None:
        if isinstance(value, str) and exits is not None and value not in names:
            close = get_close_matches(value, sorted(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            defined = ", ".join(sorted(names)) or "none"
            problems.append(
                doc.problem(
                    t.legacy_path(path),
                    (f"exit {value!r} is not defined (defined: {defined}){hint}"),
                )
            )

    if "default" in t.data:
        check_ref(("default",), t.data["default"])
    rules = t.data.get("rules")
    if isinstance(rules, list):
        for i, rule in enumerate(rules):
            if isinstance(rule, dict) and "exit" in rule:
                check_ref(("rules", i, "exit"), rule["exit"])
    if isinstance(exits, dict):
        problems += _failover_problems(doc, t, exits, check_ref)
        for attribute in ("mark", "table"):
            seen: dict[Any, str] = {}
            for name, spec in exits.items():
                value = spec.get(attribute) if isinstance(spec, dict) else None
                if value is None:
                    continue
                if value in seen:
                    problems.append(
                        doc.problem(
                            t.legacy_path(("exits", name, attribute)),
                            (f"{attribute} {value} is already used by exit {seen[value]!r}"),
                        )
                    )
                seen.setdefault(value, name)
    return problems


def _probe6_problems(schema: Schema) -> list[tuple[Path, str]]:
    """An IPv6 probe leaves from the tunnel's own IPv6 address (the far side answers
    through the tunnel only to that): a tunnel the mesh describes must have one."""
    resolver = Resolver(schema)
    ipv4_only = {
        (host, side.interface or name): name
        for name, tunnel in schema.tunnels.items()
        if tunnel.subnet.version == 4 and tunnel.subnet6 is None
        for host, side in tunnel.hosts.items()
        if host in resolver.entries
    }
    found: list[tuple[Path, str]] = []
    for (entry, interface), tunnel in ipv4_only.items():
        for name, spec in schema.exits.items():
            if spec.health is None or resolver.interface(spec.interface, entry) != interface:
                continue
            found += _probe6_through(name, spec.health.probe, tunnel, interface)
    return list(dict.fromkeys(found))


def _probe6_through(
    name: str, probe: Sequence[tuple[IPAddress, int]], tunnel: str, interface: str
) -> list[tuple[Path, str]]:
    """The IPv6 targets of exit ``name``'s probe, through an IPv4-only tunnel."""
    return [
        (
            ("exits", name, "health", "probe", i),
            f"{address} is IPv6 and tunnel {tunnel!r} ({interface}) has no IPv6 address to "
            "probe from: give it a subnet6, or probe an IPv4 target",
        )
        for i, (address, _) in enumerate(probe)
        if address.version == 6
    ]


def _source_problems(schema: Schema) -> list[tuple[Path, str]]:
    """A rule's sources name clients that ``clients.peers`` has."""
    peers = schema.clients.peers if schema.clients is not None else {}
    found: list[tuple[Path, str]] = []
    for i, rule in enumerate(schema.rules):
        for j, source in enumerate(rule.sources):
            if isinstance(source, str) and source not in peers:
                close = get_close_matches(source, sorted(peers), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                known = ", ".join(sorted(peers)) or "none"
                found.append(
                    (
                        ("rules", i, "sources", j),
                        f"no client {source!r} (clients.peers: {known}){hint}",
                    )
                )
    return found


def _failover_problems(
    doc: Document, t: Translation, exits: dict[Any, Any], check_ref: Callable[[Path, Any], None]
) -> list[Problem]:
    """Each exit's ``on_down`` list names other defined exits, each once."""
    problems: list[Problem] = []
    for name, spec in exits.items():
        failover = spec.get("on_down") if isinstance(spec, dict) else None
        if not isinstance(failover, list):
            continue
        for i, other in enumerate(failover):
            path = ("exits", name, "on_down", i)
            if other == name:
                problems.append(
                    doc.problem(t.legacy_path(path), "an exit cannot fail over to itself")
                )
            elif other in failover[:i]:
                problems.append(doc.problem(t.legacy_path(path), f"exit {other!r} is listed twice"))
            else:
                check_ref(path, other)
    return problems


def _problem(doc: Document, t: Translation, error: ErrorDetails) -> Problem:
    native: Path = tuple(part for part in error["loc"] if not _is_wrapper(part))
    legacy = t.legacy_path(native)
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(native[-1])
        close = get_close_matches(key, sorted(_known_keys(native[:-1])), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return doc.problem(legacy, f"unknown key {key!r}{hint}", key=True)
    return doc.problem(legacy, _message(error))


_WRAPPER = re.compile(r"^(\[key\]|function-(after|before|plain|wrap)\[.*\])$")


def _is_wrapper(part: str | int) -> bool:
    """Markers pydantic puts in an error's location that are no key of the file (a key
    written ``x]`` in the file is a key, and stays in the path)."""
    return isinstance(part, str) and _WRAPPER.match(part) is not None


def _message(error: ErrorDetails) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if kind == "missing":
        return "is required"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number, not {value!r}"
    if kind in ("less_than_equal", "greater_than_equal", "less_than", "greater_than"):
        bound = {
            "less_than_equal": "at most {le}",
            "greater_than_equal": "at least {ge}",
            "less_than": "less than {lt}",
            "greater_than": "more than {gt}",
        }[kind]
        return f"must be {bound.format(**error.get('ctx', {}))}, not {value!r}"
    if kind == "string_pattern_mismatch":
        return f"{value!r} is not a valid name here (letters, digits, '_', '-', '.')"
    if kind == "list_type":
        return f"must be a list, not {type(value).__name__}"
    if kind in ("dict_type", "model_type"):
        return f"must be a mapping, not {type(value).__name__}"
    if kind == "literal_error" and error["loc"] == ("version",):
        return f"unsupported version {value!r}: this iptserver reads version 1"
    return f"{error['msg']} (got {value!r})"


@cache
def _json_schema() -> dict[str, Any]:
    return Schema.model_json_schema()


def _known_keys(path: Path) -> set[str]:
    """The keys the native schema allows at ``path``, for "did you mean" hints."""
    root = _json_schema()
    node: dict[str, Any] = root
    for part in path:
        node = _resolve(root, node)
        if isinstance(part, int):
            node = node.get("items", {})
        elif "properties" in node and part in node["properties"]:
            node = node["properties"][part]
        elif "additionalProperties" in node:
            node = node["additionalProperties"]
        else:  # a mapping whose keys follow a pattern (exit names)
            node = next(iter(node.get("patternProperties", {}).values()), {})
    return set(_resolve(root, node).get("properties", {}))


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    for variant in node.get("anyOf", []):
        if "$ref" in variant or "properties" in variant:
            return _resolve(root, variant)
    return node
