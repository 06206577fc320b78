"""The private dockerd and the sidecar image, shared by the compose tests of a run: one
dockerd, one image build (the half minute a second module would otherwise spend again)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compose.harness import (
    ARTIFACTS,
    IMAGE,
    WORKDIR_PREFIX,
    Dockerd,
    build_context,
    build_image,
    reap_stale_dockerds,
    rootfs_tarball,
    start_dockerd,
    stop_dockerd,
)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    reap_stale_dockerds()
    workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir="/var/tmp"))
    started = time.monotonic()
    daemon = start_dockerd(workdir)
    try:
        tarball, rootfs_took = rootfs_tarball()
        context = workdir / "context"
        context.mkdir()
        build_context(context)
        build_started = time.monotonic()
        build_image(daemon, tarball, context, IMAGE)
        figures = (
            f"rootfs (debootstrap): {'cached' if rootfs_took is None else f'{rootfs_took:.0f} s'}\n"
            f"image (import + docker build): {time.monotonic() - build_started:.0f} s\n"
            f"dockerd up to image ready: {time.monotonic() - started:.0f} s\n"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "compose-build.txt").write_text(figures)
        print(figures)
        yield daemon
    finally:
        forced = stop_dockerd(daemon)
        shutil.rmtree(workdir, ignore_errors=True)
        assert not forced, f"dockerd did not stop cleanly: {forced}"
