"""Translate the two MRVPN2 formats into the native one, keeping track of where each
native value came from so errors point at the legacy file as written.

* ipt-server ``settings.yaml``: ``routes:`` items keyed ``country`` / ``domain`` / ``net``
  (a string or a list), with ``interface``, ``weight``, ``metric``, ``route_ttl``; and the
  top-level ``interfaces``, ``pbr_mark``, ``table``, ``domain_route_ttl``.
* The MRVPN2 schema: its ``routing:`` section, whose ``routes`` items carry ``interface``,
  ``metric``, ``geo: ["country='RU'"]``, ``domains: [regex]`` and ``static: [cidr]``.

An exit named only by an interface becomes an exit of that name. MRVPN2 domain entries
are regular expressions matched from the start of the name, so they become ``~REGEX``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any

from iptserver.errors import Problem
from iptserver.schema.source import Document, Path


class Format(enum.Enum):
    NATIVE = "native"
    IPT_SERVER = "ipt-server settings.yaml"
    MRVPN2 = "MRVPN2 schema"


def detect_format(data: Any) -> Format | None:
    if not isinstance(data, dict):
        return None
    if "exits" in data or "rules" in data or "version" in data:
        return Format.NATIVE
    if "routing" in data:
        return Format.MRVPN2
    if "routes" in data:
        return Format.IPT_SERVER
    return None


@dataclass
class Translation:
    """Native-shaped data, where each native path came from, and what could not be read."""

    data: dict[str, Any] = field(default_factory=dict)
    origin: dict[Path, Path] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)

    def legacy_path(self, path: Path) -> Path:
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.origin:
                return self.origin[path[:cut]] + path[cut:]
        return path


_SETTINGS_KEYS = {
    "routes",
    "interfaces",
    "pbr_mark",
    "table",
    "domain_route_ttl",
    "ws_port",
    "db",
    "clean_conntrack",
}
_SETTINGS_IGNORED = {"ws_port", "db", "clean_conntrack"}
_SETTINGS_ROUTE_KEYS = {"country", "domain", "net", "interface", "weight", "metric", "route_ttl"}
_ROUTING_KEYS = {"routes", "pbr_mark", "table", "interfaces", "domain_route_ttl"}
_ROUTING_ROUTE_KEYS = {"interface", "metric", "weight", "route_ttl", "geo", "domains", "static"}
# Sections of the MRVPN2 schema that describe deployment, not routing.
_MRVPN2_OTHER = {"services", "entrypoint", "firezone", "mrvpn_root"}
# Read as they are: MRVPN2's tunnels, and what it took from its inventory (native form).
_MRVPN2_MESH = {"tunnels", "nodes", "clients"}
_TUNNEL_KEYS = {"subnet", "preshared_key", "hosts"}

_GEO = re.compile(r"""^\s*country\s*=\s*(['"]?)([A-Za-z]{2})\1\s*$""")


class _Translator:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.out = Translation()

    def problem(self, path: Path, message: str, *, key: bool = False) -> None:
        self.out.problems.append(self.doc.problem(path, message, key=key))

    def note(self, path: Path, message: str) -> None:
        self.out.notes.append(self.doc.problem(path, message, key=True))

    def put(self, native: tuple[str, ...], value: Any, legacy: Path) -> None:
        target = self.out.data
        for part in native[:-1]:
            target = target.setdefault(part, {})
        target[native[-1]] = value
        self.out.origin[native] = legacy

    def unknown_keys(self, mapping: dict[Any, Any], known: set[str], path: Path) -> None:
        for key in mapping:
            if key in known:
                continue
            close = get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.problem((*path, key), f"unknown key {key!r}{hint}", key=True)

    def as_list(self, value: Any, path: Path) -> list[tuple[Any, Path]]:
        """A legacy field that is a string or a list of strings, with each item's path."""
        if isinstance(value, list):
            return [(item, (*path, i)) for i, item in enumerate(value)]
        if value is None:
            return []
        return [(value, path)]

    def common(self, section: dict[str, Any], base: Path) -> None:
        """The top-level settings shared by both formats."""
        simple = {
            "interfaces": ("ingress",),
            "pbr_mark": ("kernel", "mark_base"),
            "table": ("kernel", "table_base"),
            "domain_route_ttl": ("ttl", "hold"),
        }
        for legacy_key, native in simple.items():
            if legacy_key in section:
                self.put(native, section[legacy_key], (*base, legacy_key))

    def exits_and_rules(self, routes: Any, base: Path, route_keys: set[str]) -> None:
        path = (*base, "routes")
        if not isinstance(routes, list):
            self.problem(path, "routes must be a list of route items")
            return
        exits: dict[str, Any] = {}
        rules: list[dict[str, Any]] = []
        self.out.data["exits"] = exits
        self.out.data["rules"] = rules
        self.out.origin[("rules",)] = path
        for index, item in enumerate(routes):
            item_path = (*path, index)
            if not isinstance(item, dict):
                self.problem(item_path, "a route must be a mapping")
                rules.append({})
                continue
            self.unknown_keys(item, route_keys, item_path)
            rule_path = ("rules", index)
            self.out.origin[rule_path] = item_path
            rule: dict[str, Any] = {}
            # Also when missing, so that "is required" names the legacy key.
            self.out.origin[(*rule_path, "exit")] = (*item_path, "interface")
            interface = item.get("interface")
            if interface is not None:
                rule["exit"] = interface
                if isinstance(interface, str) and interface not in exits:
                    exits[interface] = {"interface": interface}
                    self.out.origin[("exits", interface)] = (*item_path, "interface")
                    self.out.origin[("exits", interface, "interface")] = (*item_path, "interface")
            for legacy_key, native_key in (("weight", "weight"), ("route_ttl", "hold")):
                if legacy_key in item:
                    rule[native_key] = item[legacy_key]
                    self.out.origin[(*rule_path, native_key)] = (*item_path, legacy_key)
            if "metric" in item:
                self.note(
                    (*item_path, "metric"),
                    "metric is not used: each exit has its own "
                    "routing table, and weight decides between rules",
                )
            self.matchers(item, item_path, rule, rule_path)
            rules.append(rule)

    def matchers(
        self, item: dict[str, Any], item_path: Path, rule: dict[str, Any], rule_path: Path
    ) -> None:
        sources = {
            "domain": "domains",
            "domains": "domains",
            "country": "countries",
            "geo": "countries",
            "net": "nets",
            "static": "nets",
        }
        for legacy_key, native_key in sources.items():
            if legacy_key not in item:
                continue
            values = rule.setdefault(native_key, [])
            for value, value_path in self.as_list(item[legacy_key], (*item_path, legacy_key)):
                converted = self.convert(legacy_key, value, value_path)
                if converted is None:
                    continue
                self.out.origin[(*rule_path, native_key, len(values))] = value_path
                values.append(converted)

    def convert(self, legacy_key: str, value: Any, path: Path) -> Any:
        if legacy_key in ("domain", "domains"):
            # MRVPN2 matched these with re.match; keep that meaning.
            return f"~{value}" if isinstance(value, str) else value
        if legacy_key == "geo":
            match = _GEO.match(value) if isinstance(value, str) else None
            if match is None:
                self.problem(path, f"geo entry {value!r} must look like country='RU'")
                return None
            return match.group(2)
        return value

    def mesh(self, data: dict[str, Any]) -> None:
        """``nodes`` and ``clients`` as in the native format; ``tunnels`` as MRVPN2 wrote
        it, where a tunnel's hosts may sit under ``hosts`` or directly under the tunnel."""
        for key in ("nodes", "clients"):
            if key in data:
                self.put((key,), data[key], (key,))
        tunnels = data.get("tunnels")
        if tunnels is None:
            return
        if not isinstance(tunnels, dict):
            self.problem(("tunnels",), "tunnels must be a mapping of tunnel names")
            return
        out: dict[Any, Any] = {}
        self.put(("tunnels",), out, ("tunnels",))
        for name, spec in tunnels.items():
            base: Path = ("tunnels", name)
            self.out.origin[base] = base
            if not isinstance(spec, dict):
                out[name] = spec  # the model says what is wrong with it
                continue
            tunnel = {key: spec[key] for key in ("subnet", "preshared_key") if key in spec}
            if "hosts" in spec:
                tunnel["hosts"] = spec["hosts"]
                extra = {k: v for k, v in spec.items() if k not in _TUNNEL_KEYS}
                for key in extra:
                    self.problem((*base, key), f"unknown key {key!r} next to hosts", key=True)
            else:
                tunnel["hosts"] = {k: v for k, v in spec.items() if k not in _TUNNEL_KEYS}
                self.out.origin[(*base, "hosts")] = base
                for host in tunnel["hosts"]:
                    self.out.origin[(*base, "hosts", host)] = (*base, host)
            out[name] = tunnel


def translate(doc: Document, fmt: Format) -> Translation:
    t = _Translator(doc)
    data: dict[str, Any] = doc.data
    if fmt is Format.IPT_SERVER:
        t.unknown_keys(data, _SETTINGS_KEYS, ())
        for key in sorted(_SETTINGS_IGNORED & data.keys()):
            t.note((key,), f"{key} belongs to the old ipt-server and is ignored")
        t.exits_and_rules(data.get("routes"), (), _SETTINGS_ROUTE_KEYS)
        t.common(data, ())
    else:
        t.unknown_keys(data, {"routing"} | _MRVPN2_OTHER | _MRVPN2_MESH, ())
        t.mesh(data)
        routing = data.get("routing")
        if not isinstance(routing, dict):
            t.problem(
                ("routing",),
                "routing must be a mapping with routes, interfaces, pbr_mark and table",
            )
            return t.out
        t.unknown_keys(routing, _ROUTING_KEYS, ("routing",))
        t.exits_and_rules(routing.get("routes"), ("routing",), _ROUTING_ROUTE_KEYS)
        t.common(routing, ("routing",))
    return t.out
