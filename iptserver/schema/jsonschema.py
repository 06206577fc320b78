"""The JSON Schema of the native format, for editors with a YAML language server.

``schema/iptserver.schema.json`` is this function's output; a test fails when it is stale.
"""

from __future__ import annotations

import json

from iptserver.schema.model import Schema


def json_schema_text() -> str:
    return json.dumps(Schema.model_json_schema(), indent=2, sort_keys=True) + "\n"
