"""The lab's errors: each message says which namespace, which command, and what it said."""

from __future__ import annotations

from collections.abc import Sequence

from iptserver.errors import IptserverError


class LabError(IptserverError):
    """The lab could not be built, used or torn down; the message says where and why."""


class CommandError(LabError):
    """A command in the lab failed; ``where`` is the namespace, ``stderr`` what it said."""

    def __init__(
        self,
        where: str,
        argv: Sequence[str],
        returncode: int,
        stdout: str,
        stderr: str,
        stdin: str | None = None,
    ) -> None:
        self.where, self.argv, self.returncode = where, list(argv), returncode
        self.stdout, self.stderr = stdout, stderr
        text = f"in {where}: `{' '.join(argv)}` exited {returncode}: {stderr.strip() or stdout}"
        if stdin:  # an `ip -batch` error names a line number: show the lines
            numbered = "\n".join(f"  {n}: {line}" for n, line in enumerate(stdin.splitlines(), 1))
            text += f"\ninput was:\n{numbered}"
        super().__init__(text)


class ProbeError(LabError):
    """A probe (DNS query, whoami) failed: from where, to where, and why."""
