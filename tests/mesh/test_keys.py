"""Keys are made once, kept root-only, and are real WireGuard keys (checked by `wg`)."""

from __future__ import annotations

import logging
import stat
import subprocess
from pathlib import Path

import pytest

from iptserver.errors import KeyFileError
from iptserver.mesh.keys import KeyStore, public_of


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_are_made_once_and_kept_private(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    first = store.private("entry", "wg_uk")
    assert KeyStore(tmp_path).private("entry", "wg_uk") == first
    assert store.private("uk", "wg_uk") != first
    path = tmp_path / "keys" / "entry" / "wg_uk.key"
    assert path.read_text() == first + "\n"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700 and mode(tmp_path / "keys") == 0o700
    psk = store.preshared("wg_uk")
    assert store.preshared("wg_uk") == psk and mode(tmp_path / "keys/tunnels/wg_uk.psk") == 0o600
    assert store.client_private("phone") == store.client_private("phone")


def test_public_key_is_what_wireguard_derives(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    private = store.private("entry", "wg_uk")
    by_wg = subprocess.run(
        ["wg", "pubkey"], input=private + "\n", capture_output=True, text=True, check=True
    ).stdout.strip()
    assert store.public("entry", "wg_uk") == public_of(private) == by_wg


def test_a_key_from_a_file(tmp_path: Path) -> None:
    key = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout
    secret = tmp_path / "secret"
    secret.write_text(key)
    secret.chmod(0o600)
    store = KeyStore(tmp_path / "state")
    assert store.private("entry", "wg_uk", file=str(secret)) == key.strip()
    assert not (tmp_path / "state" / "keys").exists()  # nothing generated


def test_bad_key_files_are_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = KeyStore(tmp_path)
    bad = tmp_path / "keys" / "entry" / "wg_uk.key"
    bad.parent.mkdir(parents=True)
    bad.write_text("not a key\n")
    with pytest.raises(KeyFileError, match=r"wg_uk.key is not a WireGuard key"):
        store.private("entry", "wg_uk")
    with pytest.raises(KeyFileError, match=r"cannot read the private key file .*missing"):
        store.private("entry", "wg_uk", file=str(tmp_path / "missing"))
    loose = tmp_path / "loose"
    loose.write_text(public_of(store.private("x", "y")))  # any 32-byte key will do
    loose.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        store.private("entry", "other", file=str(loose))
    assert "readable by others (mode 644); run: chmod 600" in caplog.text
