"""Where a command's output goes: printed, or written to the files the operator named.

Rendered configs (keys in them) are written through :mod:`iptserver.render.files`: mode
0600 in 0700 directories, a file whose bytes are already there left alone. A single text
file the operator asked for (a converted schema, a compose override) is written as
their umask says, since other programs of theirs read it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from iptserver.render.files import Rendered, printable, write_all


def write_or_print(text: str, output: Path | None) -> None:
    """``text`` to stdout, or to the file ``output``."""
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def emit(files: Iterable[Rendered], out: Path | None, *, show_keys: bool) -> None:
    """Write under ``out`` (saying which files changed), or print with keys hidden."""
    if out is None:
        sys.stdout.write(printable(files, show_keys=show_keys))
    else:
        write_under(out, ((f.path, f.data) for f in files))


def write_under(out: Path, files: Iterable[tuple[PurePosixPath, bytes]]) -> None:
    """Write each file under ``out``, root-only, and print its path (``(unchanged)`` if so)."""
    for path, written in write_all(out, files):
        print(f"{path}{'' if written else ' (unchanged)'}")
