"""Rendered files on their way out: written root-only, or printed with their secrets hidden.

Renderers are pure and return :class:`Rendered` values; this module is the one place
that touches the disk for them. A file whose bytes are already on disk is left alone
(its mtime too), so a re-render that changes nothing restarts nothing that watches it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

FILE_MODE = 0o600
DIR_MODE = 0o700
_SECRET_LINE = re.compile(r"^(PrivateKey|PresharedKey) = (\S+)$")


@dataclass(frozen=True)
class Secret:
    """A key that appears in a file, and where an operator finds it instead."""

    value: str
    where: str


@dataclass(frozen=True)
class Rendered:
    """One output file: its path under the output directory and its text."""

    path: PurePosixPath
    text: str
    secrets: tuple[Secret, ...] = ()

    @property
    def data(self) -> bytes:
        return self.text.encode("utf-8")


def hide_secrets(rendered: Rendered) -> str:
    """The text with its secrets replaced by where they are: a wg-quick key line becomes
    a comment; a secret elsewhere in a line (a RouterOS argument) is replaced in place."""
    where = {secret.value: secret.where for secret in rendered.secrets}
    lines = []
    for line in rendered.text.splitlines(keepends=True):
        found = _SECRET_LINE.match(line.rstrip("\n"))
        if found and found.group(2) in where:
            key, value = found.groups()
            line = f"# {key} = {_hint(where[value])}\n"
        else:
            for value, place in where.items():
                line = line.replace(value, _hint(place))
        lines.append(line)
    return "".join(lines)


def _hint(where: str) -> str:
    return f"(hidden: --show-keys prints it, or see {where})"


def printable(files: Iterable[Rendered], *, show_keys: bool) -> str:
    """Every file for a terminal, each after a ``# PATH`` header line."""
    parts = []
    for rendered in files:
        text = rendered.text if show_keys else hide_secrets(rendered)
        parts.append(f"# {rendered.path}\n{text}")
    return "\n".join(parts)


def write_file(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` (mode 0600, parent directories 0700) unless it is there.

    Returns whether the file was (re)written. The new file replaces the old one in one
    rename, so a reader never sees half a config.
    """
    _make_dirs(path.parent)
    try:
        current = path.read_bytes()
    except FileNotFoundError:
        current = None
    if current == data:
        if stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
            path.chmod(FILE_MODE)
        return False
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temporary, FILE_MODE)  # O_CREAT on a leftover keeps its old mode
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return True


def write_all(out: Path, files: Iterable[tuple[PurePosixPath, bytes]]) -> list[tuple[Path, bool]]:
    """Write each file under ``out``; (path, written) for each, in order."""
    return [(out / name, write_file(out / name, data)) for name, data in files]


def _make_dirs(directory: Path) -> None:
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for made in reversed(missing):
        try:
            made.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made meanwhile by another render: theirs
            continue
        made.chmod(DIR_MODE)  # whatever the umask
