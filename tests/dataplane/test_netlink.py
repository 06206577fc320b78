"""The kernel boundary's error translation, without the kernel: what a netlink or socket
error becomes, and which codes mean "already done"."""

from __future__ import annotations

import errno

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from iptserver.dataplane.netlink import kernel_errors
from iptserver.errors import DataplaneError

RAISED = [
    pytest.param(NetlinkError(errno.EPERM), id="netlink"),
    pytest.param(OSError(errno.EPERM, "Operation not permitted"), id="os-error"),
]


@pytest.mark.parametrize("error", RAISED)
def test_errors_become_dataplane_errors_naming_what_was_done(error: Exception) -> None:
    with pytest.raises(DataplaneError) as caught, kernel_errors("cannot flush ipset s-4"):
        raise error
    assert str(caught.value) == f"cannot flush ipset s-4: {error}"
    assert "Operation not permitted" in str(caught.value)
    assert caught.value.__cause__ is error


@pytest.mark.parametrize(
    "error",
    [NetlinkError(errno.ENOENT), FileNotFoundError(errno.ENOENT, "No such file or directory")],
    ids=["netlink", "os-error"],
)
def test_fine_codes_end_the_block_quietly(error: Exception) -> None:
    reached = False
    with kernel_errors("cannot destroy ipset s-4", fine={errno.ENOENT, errno.ESRCH}):
        raise error
    reached = True
    assert reached


def test_codes_not_listed_as_fine_still_raise() -> None:
    with (
        pytest.raises(DataplaneError, match="cannot add ip rule"),
        kernel_errors("exit uk: cannot add ip rule", fine={errno.EEXIST}),
    ):
        raise NetlinkError(errno.EINVAL)


def test_other_errors_pass_through_untouched() -> None:
    with pytest.raises(KeyError), kernel_errors("cannot list ipsets"):
        raise KeyError("not a kernel error")
