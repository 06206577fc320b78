"""Write a schema out in the native format (``iptserver convert``)."""

from __future__ import annotations

from typing import Any

import yaml

from iptserver.schema.model import Schema

_ORDER = (
    "version",
    "exits",
    "default",
    "ingress",
    "mesh",
    "rules",
    "ttl",
    "dns",
    "api",
    "kernel",
    "health",
    "nodes",
    "tunnels",
    "clients",
)


def to_yaml(schema: Schema, header: str = "") -> str:
    data: dict[str, Any] = schema.model_dump(mode="json", exclude_defaults=True)
    data["version"] = schema.version
    data["exits"] = schema.model_dump(mode="json", exclude_defaults=True)["exits"]
    ordered = {key: data[key] for key in _ORDER if key in data}
    ordered |= {key: value for key, value in data.items() if key not in ordered}
    body = yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100)
    lines = [f"# {line}" for line in header.splitlines()]
    return "\n".join([*lines, body]) if lines else body
