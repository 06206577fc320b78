"""`iptserver render frr`: load the schema, render each node's FRR files, write or print."""

from __future__ import annotations

import sys
from pathlib import Path

from iptserver.mesh.topology import mesh_of
from iptserver.render.frr import render_frr
from iptserver.render.mesh_command import emit, run_command


def render_frr_command(schema_path: Path, node: str | None, out: Path | None) -> int:
    from iptserver.schema import load_schema

    def work() -> int:
        schema = load_schema(schema_path).schema
        result = render_frr(mesh_of(schema), schema, node)
        for note in result.notes:
            print(f"iptserver render frr: {note}", file=sys.stderr)
        emit(result.files, out, show_keys=True)  # FRR files hold no secrets
        return 0

    return run_command("frr", work)
