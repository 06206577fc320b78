"""``iptserver demo``: the UK/RU/US example in the live lab (see :mod:`iptserver.lab.demo`)."""

from __future__ import annotations

import argparse

from iptserver.cli.command import Commands, add_command


def register(commands: Commands) -> None:
    add_command(commands, "demo", _demo, "check and explain the UK/RU/US example")


def _demo(args: argparse.Namespace) -> int:
    from iptserver.lab.demo import run

    return run()
