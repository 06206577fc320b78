"""``iptserver render recursor``: the files the recursor needs, against golden copies
(an intended change of the output is a change of these files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from iptserver.cli import main
from iptserver.render.recursor import RecursorSettings, render_recursor
from iptserver.schema.values import parse_endpoint

GOLDEN = Path(__file__).parent
SETTINGS = RecursorSettings(
    api=parse_endpoint("127.0.0.1:8053"),
    plugin=Path("/usr/share/iptserver/iptserver.lua"),
    directory=Path("/etc/powerdns/recursor.d"),
    fail_closed=True,
)


def test_renders_the_golden_files() -> None:
    for name, text in render_recursor(SETTINGS).items():
        assert text == (GOLDEN / name).read_text(encoding="utf-8"), name


def test_fail_open_and_token_file() -> None:
    settings = RecursorSettings(
        api=parse_endpoint("[::1]:9000"), token_file=Path("/etc/iptserver/token")
    )
    lua = render_recursor(settings)["iptserver-settings.lua"]
    assert 'host = "::1",\n  port = 9000,' in lua
    assert "fail_closed = false" in lua
    assert 'io.open("/etc/iptserver/token")' in lua


def test_http_transport_says_its_bound_and_that_it_blocks() -> None:
    settings = RecursorSettings(api=SETTINGS.api, transport="http", timeout=0.25)
    files = render_recursor(settings)
    assert 'transport = "http",\n  timeout = 0.25,' in files["iptserver-settings.lua"]
    assert "HTTP 127.0.0.1:8053; waits at most 0.25 s, blocking" in files["iptserver.conf"]


def test_ffi_transport_has_its_own_default_bound_and_says_it_blocks() -> None:
    files = render_recursor(RecursorSettings(api=parse_endpoint("[::1]:8053"), transport="ffi"))
    assert 'transport = "ffi",\n  timeout = 0.2,' in files["iptserver-settings.lua"]
    assert "UDP [::1]:8053 (ffi); waits at most 0.2 s, blocking" in files["iptserver.conf"]
    settings = RecursorSettings(api=SETTINGS.api, transport="ffi", timeout=0.05)
    assert "timeout = 0.05," in render_recursor(settings)["iptserver-settings.lua"]


@pytest.mark.parametrize(
    ("extra", "options"),
    [
        ([], {}),
        (["--transport", "http", "--timeout", "0.25"], {"transport": "http", "timeout": 0.25}),
        (["--transport", "ffi"], {"transport": "ffi"}),
    ],
    ids=["udp", "http", "ffi"],
)
def test_cli_writes_what_the_renderer_renders(
    tmp_path: Path, extra: list[str], options: dict[str, Any]
) -> None:
    argv = ["render", "recursor", "--fail-closed", "--out-dir", str(tmp_path)]
    argv += ["--plugin", "/usr/share/iptserver/iptserver.lua", *extra]
    assert main(argv) == 0
    settings = RecursorSettings(
        api=SETTINGS.api, plugin=SETTINGS.plugin, directory=tmp_path, fail_closed=True, **options
    )
    for name, text in render_recursor(settings).items():
        assert (tmp_path / name).read_text(encoding="utf-8") == text
