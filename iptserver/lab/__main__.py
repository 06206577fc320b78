"""``python -m iptserver.lab up``: build the lab, show it, keep it until Ctrl-C.

For people debugging by hand (``ip netns exec ipts<id>-client bash``). ``reap`` removes
labs left behind by killed runs.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from iptserver.lab.errors import LabError
from iptserver.lab.state import reap_stale_labs
from iptserver.lab.topology import Lab


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the `with` tears the lab down


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iptserver.lab", description=__doc__)
    parser.add_argument("command", choices=["up", "reap"])
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    if args.command == "reap":
        print("reaped:", " ".join(reap_stale_labs()) or "nothing")
        return 0
    # A shell starts background jobs with SIGINT ignored, which Python then keeps: restore
    # it, and treat SIGTERM/SIGHUP alike, so every way of stopping tears the lab down.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    signal.signal(signal.SIGHUP, _stop_on_sigterm)
    try:
        with Lab() as lab:
            print(lab.describe())
            print(f"up in {lab.build_seconds:.2f} s; Ctrl-C tears it down", flush=True)
            threading.Event().wait()
    except KeyboardInterrupt:
        return 0
    except LabError as exc:
        print(f"lab failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
