"""The example mesh (schema/examples/mesh.yaml) renders with all three mesh commands, and
every rendered file is accepted by the tool that reads it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from iptserver.cli import main
from tests.conftest import EXAMPLES
from tests.render.test_wireguard import parse

EXAMPLE = EXAMPLES / "mesh.yaml"


def test_the_example_mesh_renders_and_wg_quick_reads_every_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, out = str(tmp_path / "state"), tmp_path / "out"
    assert main(["check", str(EXAMPLE)]) == 0
    for command in (["wireguard"], ["clients"], ["routeros", "--node", "branch"]):
        assert (
            main(["render", *command, str(EXAMPLE), "--state-dir", state, "--out", str(out)]) == 0
        )
    err = capsys.readouterr().err
    assert "branch: a RouterOS peer, skipped" in err
    configs = sorted(out.rglob("*.conf"))
    nodes = {p.parent.name for p in configs if p.parent != out}
    assert nodes == {"entry", "uk", "ru", "us", "office"}
    assert {p.stem for p in configs if p.parent == out} == {
        "alice-phone",
        "bob-laptop",
        "carol-tablet",
    }
    for conf in configs:
        stripped = subprocess.run(
            ["wg-quick", "strip", str(conf)], capture_output=True, text=True, check=True
        ).stdout
        assert [s for s, _ in parse(stripped)] == [s for s, _ in parse(conf.read_text())]
        qr = conf.with_suffix(".png")
        if conf.parent == out:
            decoded = subprocess.run(
                ["zbarimg", "--raw", "-q", "-Sbinary", str(qr)], capture_output=True, check=True
            ).stdout.decode()
            assert decoded == conf.read_text()
    assert {p.name for p in (out / "branch").iterdir()} == {"deploy.rsc", "cleanup.rsc"}
