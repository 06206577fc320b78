"""WireGuard keys: made once, kept in the state directory, readable by root only.

A key is X25519 (Curve25519) as WireGuard uses it: 32 raw bytes, written in base64. The
private half never leaves the state directory except into a rendered config; a schema
may instead point at a file (``private_key_file``) or give only a public key, for a side
whose private key is kept on its own machine.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from iptserver.errors import KeyFileError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

log = logging.getLogger(__name__)


def public_of(private: str) -> str:
    raw = _decode(private, "private key")
    public = _x25519().from_private_bytes(raw).public_key().public_bytes_raw()
    return base64.b64encode(public).decode()


def _x25519() -> type[X25519PrivateKey]:
    # Imported when a key is made or read, not at start: it costs the daemon 6 MB of RSS.
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey


def _decode(text: str, what: str, where: Path | None = None) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        place = f" in {where}" if where else ""
        raise KeyFileError(f"the {what}{place} is not a WireGuard key (44 characters of base64)")
    return raw


class KeyStore:
    """``STATE/keys/NODE/INTERFACE.key``, ``STATE/keys/tunnels/TUNNEL.psk``,
    ``STATE/keys/clients/NAME.key``; directories 0700, files 0600."""

    def __init__(self, state_dir: Path | str) -> None:
        self.root = Path(state_dir) / "keys"

    def private(self, node: str, interface: str, file: str | None = None) -> str:
        if file is not None:
            return _given(Path(file))
        return self._get(self.root / node / f"{interface}.key", _new_private)

    def public(self, node: str, interface: str, file: str | None = None) -> str:
        return public_of(self.private(node, interface, file))

    def client_private(self, name: str, file: str | None = None) -> str:
        if file is not None:
            return _given(Path(file))
        return self._get(self.root / "clients" / f"{name}.key", _new_private)

    def preshared(self, tunnel: str) -> str:
        return self._get(self.root / "tunnels" / f"{tunnel}.psk", _new_preshared)

    def _get(self, path: Path, make: Callable[[], str]) -> str:
        found = _read(path, "key")
        if found is not None:
            return found
        text = make()
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            for directory in (self.root, path.parent):
                directory.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another render made it meanwhile: use theirs
            return _given(path)
        except OSError as e:
            raise KeyFileError(f"cannot create the key file {path}: {e.strerror}") from e
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        log.info("generated a new WireGuard key in %s", path)
        return text


def _given(path: Path) -> str:
    found = _read(path, "private key")
    if found is None:
        raise KeyFileError(f"cannot read the private key file {path}: it does not exist")
    return found


def _read(path: Path, what: str) -> str | None:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"cannot read the {what} file {path}: {e}") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "key file %s is readable by others (mode %o); run: chmod 600 %s",
            path,
            stat.S_IMODE(mode),
            path,
        )
    _decode(text, what, path)
    return text.strip()


def _new_private() -> str:
    raw = _x25519().generate().private_bytes_raw()
    return base64.b64encode(raw).decode()


def _new_preshared() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()
