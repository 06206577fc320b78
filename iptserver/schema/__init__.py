"""The routing schema: its model, the YAML it is read from, and the legacy formats."""

from iptserver.schema.load import load_schema, parse_schema
from iptserver.schema.model import Exit, Rule, Schema

__all__ = ["Exit", "Rule", "Schema", "load_schema", "parse_schema"]
