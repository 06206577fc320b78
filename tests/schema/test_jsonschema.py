"""The committed JSON Schema is the model's, and it accepts the native examples."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from iptserver.schema.jsonschema import json_schema_text
from tests.conftest import EXAMPLES, REPO

COMMITTED = REPO / "schema" / "iptserver.schema.json"


def test_committed_json_schema_is_up_to_date() -> None:
    assert COMMITTED.read_text() == json_schema_text(), (
        "schema/iptserver.schema.json is stale: run `iptserver json-schema > "
        "schema/iptserver.schema.json`"
    )


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_native_examples_validate_against_the_json_schema(path: Path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), json.loads(COMMITTED.read_text()))


def test_json_schema_rejects_an_unknown_key() -> None:
    schema = json.loads(COMMITTED.read_text())
    with pytest.raises(jsonschema.ValidationError, match="'rulez' was unexpected"):
        jsonschema.validate({"exits": {"a": {"interface": "wg0"}}, "rulez": []}, schema)
