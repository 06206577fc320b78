"""Rendered files: written root-only and only when their bytes change; secrets hidden."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from iptserver.render.files import Rendered, Secret, hide_secrets, write_all, write_file

KEY = "yHqOQsiU4+mSO1ELqyT4NilVXE2bi/GGZqXcEeLmUXs="


def test_a_file_is_written_once_and_its_mode_repaired(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "x.conf"
    assert write_file(path, b"one\n") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    before = path.stat()
    path.chmod(0o644)
    assert write_file(path, b"one\n") is False  # same bytes: not rewritten ...
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # ... but root-only again
    assert write_file(path, b"two\n") is True
    assert path.read_bytes() == b"two\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(path.parent)) == ["x.conf"]  # no temporary file left


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir(mode=0o755)
    (tmp_path / "out").chmod(0o755)
    [(path, written)] = write_all(tmp_path / "out", [(PurePosixPath("n/f"), b"x")])
    assert written and path == tmp_path / "out" / "n" / "f"
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "n").stat().st_mode) == 0o700


def test_secrets_are_hidden_as_comments_or_in_place() -> None:
    text = f'[Interface]\nPrivateKey = {KEY}\n/interface wireguard add private-key="{KEY}"\n'
    rendered = Rendered(PurePosixPath("x"), text, (Secret(KEY, "/state/keys/n/i.key"),))
    assert hide_secrets(rendered) == (
        "[Interface]\n"
        "# PrivateKey = (hidden: --show-keys prints it, or see /state/keys/n/i.key)\n"
        '/interface wireguard add private-key="(hidden: --show-keys prints it, or see '
        '/state/keys/n/i.key)"\n'
    )
    other = Rendered(PurePosixPath("x"), f"PublicKey = {KEY}\n")  # not a secret: shown
    assert hide_secrets(other) == other.text
