"""The kernel boundary's error translation: netlink and socket errors become DataplaneError.

``ipset.py`` and ``routing.py`` wrap each kernel call in :func:`kernel_errors`, so a
refusal reaches the daemon as one :class:`~iptserver.errors.DataplaneError` whose
message says what was being done to what, and why the kernel said no::

    with kernel_errors(f"cannot flush ipset {name}"):
        self._ipset.flush(name)
    # DataplaneError: cannot flush ipset ipts-d0-4: (2, 'No such file or directory')
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager

from pyroute2.netlink.exceptions import NetlinkError

from iptserver.errors import DataplaneError


@contextmanager
def kernel_errors(doing: str, *, fine: Collection[int] = ()) -> Iterator[None]:
    """Raise NetlinkError and OSError as ``DataplaneError(f"{doing}: {error}")``.

    ``fine``: error codes (``errno``) that mean the work is already done, such as
    ENOENT when deleting; they end the block quietly instead.
    """
    try:
        yield
    except NetlinkError as e:
        if e.code not in fine:
            raise DataplaneError(f"{doing}: {e}") from e
    except OSError as e:
        if e.errno not in fine:
            raise DataplaneError(f"{doing}: {e}") from e
