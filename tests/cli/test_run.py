"""``iptserver run``'s options as the command line reads them."""

from __future__ import annotations

import pytest

from iptserver.cli import parser


def test_workers_default_to_one_process() -> None:
    assert parser().parse_args(["run", "--config", "s.yaml"]).workers == 1


@pytest.mark.parametrize("text", ["0", "65", "-1", "two"], ids=["zero", "too-many", "neg", "word"])
def test_workers_out_of_range_is_a_usage_error(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(["run", "--config", "s.yaml", "--workers", text])
    assert exit_.value.code == 2
    assert "is not a number of processes from 1 to 64" in capsys.readouterr().err


def test_workers_are_read() -> None:
    assert parser().parse_args(["run", "--config", "s.yaml", "--workers", "3"]).workers == 3
