"""A worker process: one more DNS proxy on the daemon's addresses (SO_REUSEPORT).

The daemon owns the kernel; a worker only decides answers and writes their learned
entries into the sets the daemon made, through a netlink socket of its own, so answers
are spread over several cores. It is told what to do on standard input, one JSON object
a line, and says how it went on standard output:

    {"options": {...}, "exits": EXITS}  ->  "ready" | "error: WHY"     (the first line)
    {"exits": EXITS}                    ->  "reloaded" | "error: WHY"  (after a reload)

``EXITS`` are the exits the daemon's kernel holds (``exits_to_json``): the worker's plan is
made from them, so its marks and sets are the daemon's. End of input: the worker stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence

from iptserver.daemon.clients import ProxyClients
from iptserver.daemon.memory import settle
from iptserver.daemon.options import Options, options_from_json
from iptserver.dataplane.ipset import IPSets
from iptserver.dataplane.kernel import write_learned
from iptserver.dataplane.plan import LearnedEntry, exits_from_json
from iptserver.dataplane.plan import plan as kernel_plan
from iptserver.dns.config import DnsProxyConfig
from iptserver.dns.proxy import DnsProxy
from iptserver.errors import IptserverError
from iptserver.geoip import GeoIPDatabase, open_geoip
from iptserver.learning import Learner, State
from iptserver.policy import Policy

log = logging.getLogger("iptserver.worker")


class Worker:
    def __init__(self, options: Options) -> None:
        self.options = options
        self._geo: GeoIPDatabase | None = open_geoip(options.geoip)
        self._sets = IPSets()
        self._lists = options.lists_reader

    def load(self, exits: str) -> State:
        """The daemon's schema and plan; raises SchemaError."""
        loaded = self.options.load(self._lists)
        plan = kernel_plan(loaded.schema, {}, exits_from_json(exits))
        return State(Policy(loaded.schema, self._geo), plan, loaded)

    def _write_now(self, entries: Sequence[LearnedEntry]) -> bool:
        write_learned(self._sets, entries)
        return True

    async def _write(self, entries: Sequence[LearnedEntry]) -> None:
        write_learned(self._sets, entries)

    async def serve(self, exits: str) -> None:
        """Answer until standard input ends, following the daemon's reloads."""
        state = self.load(exits)
        schema = state.policy.schema
        learner = Learner(state, self._write, apply_now=self._write_now)
        config = DnsProxyConfig(
            listen=tuple(schema.dns.listen),
            upstream=tuple(schema.dns.upstream),
            timeout=schema.dns.timeout,
            fail_closed=self.options.fail_closed,
            reuse_port=True,
        )
        settle()  # before the proxy listens: a full collection stalls the loop
        clients = ProxyClients()
        gate = await clients.gate(schema, quiet=True)
        async with DnsProxy(config, learner, clients=gate) as proxy:
            _say("ready")
            while line := await _read_line():
                try:
                    learner.state = self.load(json.loads(line)["exits"])
                    proxy.clients = await clients.gate(learner.state.policy.schema, quiet=True)
                except (IptserverError, ValueError, KeyError) as e:
                    _say(f"error: {e}")
                else:
                    settle(full=False)
                    _say("reloaded")
        learner.close()
        self._sets.close()


async def _read_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def _say(line: str) -> None:
    print(line.replace("\n", " "), flush=True)


def main() -> int:
    import uvloop

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon stops it: end of input
    hello = json.loads(sys.stdin.readline() or "{}")
    logging.basicConfig(
        level=hello.get("log_level", logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    try:
        worker = Worker(options_from_json(hello["options"]))
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(worker.serve(hello["exits"]))
    except (IptserverError, OSError, ValueError, KeyError) as e:
        _say(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
