"""Sockets inside a network namespace, made from this process without a subprocess.

A socket belongs to the network namespace it was created in, for its whole life,
whichever thread uses it later. setns(CLONE_NEWNET) changes the namespace of the calling
thread only (unlike mount or user namespaces, a multi-threaded process may do this), so
a short-lived thread enters the namespace, creates the socket and ends: the caller's
threads never leave the root namespace, and nothing is forked. This makes probes (DNS
queries, whoami connections) cost microseconds instead of a Python start-up.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

NETNS_DIR = Path("/run/netns")  # where `ip netns add` pins namespaces
CLONE_NEWNET = 0x40000000
# Python 3.11 has no os.setns (3.12 adds it): call libc's.
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def _enter(netns: str) -> None:
    fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in(netns: str, call: Callable[[], T]) -> T:
    """``call()`` on a short-lived thread inside ``netns`` (a name under /run/netns)."""
    done: list[T] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            _enter(netns)
            done.append(call())
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=work, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return done[0]


def socket_in(
    netns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
) -> socket.socket:
    """A new socket living in ``netns``."""
    return run_in(netns, lambda: socket.socket(family, kind))


def family_of(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET
