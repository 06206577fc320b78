"""The daemon's life: learned routes expire, reloads keep connections, restarts add
nothing twice, a bad schema on reload changes nothing.

Every test owns its iptserver (``iptservers``) and proves behaviour by what the far side
saw (``lab.whoami`` / ``lab.hold``) and what the client's resolver got.
"""

from __future__ import annotations

import contextlib
import io
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from iptserver.cli import main
from iptserver.lab import Lab
from iptserver.lab.zones import ZONE
from tests.e2e.conftest import (
    BASE_SCHEMA,
    ENTRY_DNS,
    LAB_EXITS,
    LAB_SETTINGS,
    Iptservers,
    Running,
    resolved,
)
from tests.e2e.entry_kernel import EntryState, differences, entry_state, ours

# -- TTL expiry --------------------------------------------------------------------------

HOLD = 3
TTL_SCHEMA = (
    BASE_SCHEMA
    + f"""
default: direct
rules:
  - exit: uk
    domains: ["=short.example.org", "=long.example.org"]
    hold: {HOLD}
"""
)


def test_learned_routes_last_their_hold_then_fall_back(iptservers: Iptservers) -> None:
    """A rule's ``hold`` is both the TTL cap handed to the client and the lifetime of the
    learned entry: the client may reconnect through the exit while its answer is fresh,
    and once the entry expires a new connection takes the default way again.

    short.example.org has a TTL (2 s) under the hold, long.example.org one far over it
    (capped to the hold). Both are timed at once, one connection each every 0.1 s.
    """
    lab = iptservers.start(TTL_SCHEMA).lab
    records = {name: ZONE[name][0] for name in ("short.example.org", "long.example.org")}
    for record in records.values():
        assert lab.whoami("client", record.value) == "direct", "before any answer: the default"

    asked = time.monotonic()
    for name, record in records.items():
        assert resolved(lab, name) == [(record.value, min(record.ttl, HOLD))]
    # name -> (seconds from the query to a connection, the exit it took), until one
    # takes another exit than uk
    timelines: dict[str, list[tuple[float, str]]] = {name: [] for name in records}

    def waiting(name: str) -> bool:
        return not timelines[name] or timelines[name][-1][1] == "uk"

    while any(map(waiting, records)):
        for name in filter(waiting, records):
            started = time.monotonic() - asked
            timelines[name].append((started, lab.whoami("client", records[name].value)))
        assert time.monotonic() - asked < HOLD + 3, f"routed past the hold: {timelines}"
        time.sleep(0.1)
    for name, seen in timelines.items():
        assert seen[0][1] == "uk", f"{name}: the first connection after the answer: {seen}"
        fell_back_at, way = seen[-1]
        assert way == "direct", f"{name}: {seen}"
        # The entry was added before the answer went out, so it cannot expire before
        # HOLD s after the query; 1 s allows for the probe's way to the entry.
        assert fell_back_at > HOLD - 1, f"{name}: expired before its hold: {seen}"
        assert lab.whoami("client", records[name].value) == "direct", "gone for good"


# -- an established connection keeps its exit across a reload ----------------------------

HELD_SECONDS = 10
REROUTED_NAME = "long.example.org"
REROUTED_NET = "203.0.113.77"
# The same exits listed in another order.
EXITS_REORDERED = """\
exits:
  direct: {interface: _DEFAULT}
  ru: {interface: wg-ru}
  us: {interface: wg-us}
  uk: {interface: wg-uk}
"""


def reroute_schema(exit_name: str, exits: str = LAB_EXITS) -> str:
    """REROUTED_NET and REROUTED_NAME's answers via ``exit_name``."""
    return (
        exits
        + LAB_SETTINGS
        + f"""
default: direct
rules:
  - exit: {exit_name}
    nets: [{REROUTED_NET}/32]
    domains: ["={REROUTED_NAME}"]
"""
    )


# (what the reload changes, the schema it brings)
RELOADS = [
    ("rerouted", reroute_schema("ru")),
    ("rerouted-exits-reordered", reroute_schema("ru", EXITS_REORDERED)),
]


@pytest.mark.parametrize("reloaded", [r[1] for r in RELOADS], ids=[r[0] for r in RELOADS])
def test_established_connections_keep_their_exit_across_a_reload(
    iptservers: Iptservers, reloaded: str
) -> None:
    """CONNMARK: the first packet's mark is saved in conntrack and restored for every
    later packet, so a reload that sends an address elsewhere moves new connections
    only. Held connections (to a net rule's address and to a name's answer) prove it by
    surviving: after the reload their client sends data and keeps receiving lines, which
    a packet leaving through the other exit (another source address at the far side)
    would have had answered with a reset.

    Reordering the exits must not matter: marks belong to exits, not to positions.
    """
    daemon = iptservers.start(reroute_schema("uk"))
    lab = daemon.lab
    targets = {"net": REROUTED_NET, "name": resolved(lab, REROUTED_NAME)[0][0]}
    with contextlib.ExitStack() as stack:
        held = {
            what: stack.enter_context(lab.hold("client", address, HELD_SECONDS))
            for what, address in targets.items()
        }
        opened = time.monotonic()
        firsts = {what: lab.exit_of(connection.first) for what, connection in held.items()}
        assert firsts == dict.fromkeys(held, "uk")
        iptservers.rewrite(daemon, reloaded)
        assert daemon.reload(), daemon.log
        resolved(lab, REROUTED_NAME)  # answered again: its learned entry takes the new exit
        for what, address in targets.items():
            assert lab.whoami("client", address) == "ru", f"{what}: a new connection"
        sent = time.monotonic()
        for connection in held.values():
            connection.sock.sendall(b"still here\n")
        # Read up to a line the server wrote after the data went out (one a second).
        last = int(sent - opened) + 2
        for what, connection in held.items():
            lines = [connection.next() for _ in range(last)]
            assert [line["n"] for line in lines] == list(range(1, last + 1)), what
            assert {lab.exit_of(line) for line in lines} == {"uk"}, what


# (what the reload changes, the uk exit it brings, the way uk's traffic then leaves)
EXIT_CHANGES = [
    ("tunnel-to-host-gateway", "uk: {interface: _DEFAULT}", "direct"),
    ("own-table", "uk: {interface: wg-uk, table: 150}", "uk"),
    ("other-tunnel", "uk: {interface: wg-us}", "us"),
]


@pytest.mark.parametrize(
    ("changed", "way"), [c[1:] for c in EXIT_CHANGES], ids=[c[0] for c in EXIT_CHANGES]
)
def test_reload_that_changes_how_an_exit_leaves(
    iptservers: Iptservers, changed: str, way: str
) -> None:
    """An exit's traffic takes its new way at once, and its old way is gone: once the
    daemon stops nothing is left (no route in a table the exit no longer uses)."""
    schema = reroute_schema("uk")
    daemon = iptservers.start(schema)
    lab = daemon.lab
    assert lab.whoami("client", REROUTED_NET) == "uk"
    iptservers.rewrite(daemon, schema.replace("uk: {interface: wg-uk}", changed))
    assert daemon.reload(), daemon.log
    assert lab.whoami("client", REROUTED_NET) == way
    iptservers.stop(daemon)
    assert ours(entry_state(lab)) == [], "a plain stop removes everything"


# -- restarts ----------------------------------------------------------------------------

RESTART_SCHEMA = (
    BASE_SCHEMA
    + """
default: direct
rules:
  - exit: ru
    domains: [ru]
  - exit: uk
    nets: [203.0.113.128/25, "2001:db8:ff:1::/64"]
  - exit: us
    nets: [203.0.113.8/29]
    weight: 10
"""
)
RESTART_EXITS = 4
# (address, the exit) the static rules give, with no DNS involved
STATIC_WAYS = [
    ("203.0.113.130", "uk"),
    ("2001:db8:ff:1::60", "uk"),
    ("203.0.113.9", "us"),
    ("203.0.113.5", "direct"),
]


MAIL_RU = {record.type: record.value for record in ZONE["mail.ru"]}  # A and AAAA


def assert_routes(lab: Lab, *, resolve: bool = True) -> None:
    """The schema's ways, seen from the far side. Without ``resolve`` mail.ru is not
    asked for: only an entry learned earlier can still send its addresses via ru."""
    for address, way in STATIC_WAYS:
        assert lab.whoami("client", address) == way, address
    for rtype, address in MAIL_RU.items():
        if resolve:
            assert resolved(lab, "mail.ru", rtype)[0][0] == address
        assert lab.whoami("client", address) == "ru", f"mail.ru {rtype} {address}"


def assert_each_once(state: EntryState) -> None:
    """One jump per hook and chain, one rule per exit and family, each set once."""
    for family in ("iptables", "ip6tables"):
        mangle = state[f"{family} mangle"]
        assert mangle.count(":IPTSERVER -") == 1, mangle
        assert mangle.count("-A PREROUTING -i clients -j IPTSERVER") == 1, mangle
    nat = state["iptables nat"]
    assert nat.count(":IPTSERVER-DNS -") == 1, nat
    assert nat.count("-A PREROUTING -i clients -j IPTSERVER-DNS") == 1, nat
    for version in ("4", "6"):
        rules = [line for line in state[f"ip -{version} rule"] if "fwmark" in line]
        assert len(rules) == RESTART_EXITS, rules
        priorities = [line.split(":")[0] for line in rules]
        assert len(set(priorities)) == len(priorities), rules
    assert len(set(state["ipsets"])) == len(state["ipsets"]), state["ipsets"]


def test_restart_adds_nothing_twice(iptservers: Iptservers) -> None:
    """Start, stop, start twice more: routing works every time, each start leaves the
    kernel exactly as the first did, and each plain stop removes all of it."""
    schema = iptservers.schema(RESTART_SCHEMA)
    first: EntryState | None = None
    for _ in range(3):
        daemon = iptservers.start(schema)
        assert_routes(daemon.lab)
        state = entry_state(daemon.lab)
        assert_each_once(state)
        first = first or state
        assert differences(first, state) == []
        iptservers.stop(daemon)
        assert ours(entry_state(daemon.lab)) == [], "a plain stop removes everything"


def test_restart_with_keep_state_adopts_what_it_finds(iptservers: Iptservers) -> None:
    """``--keep-state``: the kernel keeps routing while no daemon runs, even the entries
    learned from DNS; the next start adopts it all (nothing added twice) and a final
    plain stop removes it."""
    schema = iptservers.schema(RESTART_SCHEMA)
    daemon = iptservers.start(schema, "--keep-state")
    lab = daemon.lab
    assert_routes(lab)
    kept = entry_state(lab)
    assert_each_once(kept)
    for extra in (("--keep-state",), ()):
        iptservers.stop(daemon)
        assert differences(kept, entry_state(lab)) == [], "--keep-state keeps it all"
        assert_routes(lab, resolve=False)  # no daemon: the kernel alone routes
        daemon = iptservers.start(schema, *extra)
        assert differences(kept, entry_state(lab)) == []
        assert_routes(lab, resolve=False)  # mail.ru: the adopted learned entries
    iptservers.stop(daemon)
    assert ours(entry_state(lab)) == [], "a plain stop removes everything, adopted too"


@pytest.mark.parametrize("with_state_dir", [False, True], ids=["plain", "state-dir"])
def test_kill_9_under_load_then_a_restart_adopts_it_all(
    iptservers: Iptservers, tmp_path: Path, with_state_dir: bool
) -> None:
    """SIGKILL while clients ask (no cleanup runs): the next start adds nothing twice,
    adopts the learned entries the kernel still holds (mail.ru leaves via ru without
    being asked again) and answers; a final plain stop removes it all."""
    extra = ("--state-dir", str(tmp_path / "state")) if with_state_dir else ()
    schema = iptservers.schema(RESTART_SCHEMA)
    daemon = iptservers.start(schema, *extra)
    lab = daemon.lab
    assert_routes(lab)
    before = entry_state(lab)
    stop = threading.Event()
    load = threading.Thread(target=ask_until, args=(lab, stop))
    load.start()
    try:
        time.sleep(0.5)
        daemon.proc.kill()
        daemon.proc.wait()
        assert differences(before, entry_state(lab)) == [], "SIGKILL: the kernel keeps it"
        daemon = iptservers.start(schema, *extra)
    finally:
        stop.set()
        load.join()
    assert_each_once(entry_state(lab))
    assert differences(before, entry_state(lab)) == []
    assert_routes(lab, resolve=False)  # the adopted mail.ru entries
    assert resolved(lab, "mail.ru")[0][0] == MAIL_RU["A"]


def ask_until(lab: Lab, stop: threading.Event) -> None:
    """Clients asking for new names the whole time (answers or not: the daemon dies)."""
    n = 0
    while not stop.is_set():
        n += 1
        with contextlib.suppress(Exception):
            lab.query("client", f"kill-{n}.bench.ru", server=ENTRY_DNS, timeout=0.3)


def test_keep_state_restart_onto_a_changed_schema_with_a_state_dir(
    iptservers: Iptservers, tmp_path: Path
) -> None:
    """With ``--state-dir`` a restarted daemon knows the exits the kernel holds: an exit
    kept in the new schema keeps its mark (the learned mail.ru entries still leave via
    ru although the exits were reordered), and a removed exit loses its rule and table
    (nothing of it is left after the final plain stop)."""
    state_dir = ("--state-dir", str(tmp_path / "state"))
    daemon = iptservers.start(iptservers.schema(RESTART_SCHEMA), "--keep-state", *state_dir)
    lab = daemon.lab
    assert_routes(lab)  # mail.ru learned via ru
    iptservers.stop(daemon)
    reordered = RESTART_SCHEMA.replace(
        "  uk: {interface: wg-uk}\n  ru: {interface: wg-ru}\n  us: {interface: wg-us}\n",
        "  ru: {interface: wg-ru}\n  uk: {interface: wg-uk}\n",
    ).replace("  - exit: us\n", "  - exit: direct\n")
    assert reordered != RESTART_SCHEMA
    daemon = iptservers.start(iptservers.schema(reordered), *state_dir)
    for rtype, address in MAIL_RU.items():  # not asked again: the adopted entries
        assert lab.whoami("client", address) == "ru", f"mail.ru {rtype} {address}"
    assert lab.whoami("client", "203.0.113.9") == "direct"
    rules = [line for line in entry_state(lab)["ip -4 rule"] if "fwmark" in line]
    assert len(rules) == RESTART_EXITS - 1, rules  # us is gone
    iptservers.stop(daemon)
    assert ours(entry_state(lab)) == [], "nothing of the removed exit is left"


def test_a_second_daemon_leaves_the_running_one_alone(iptservers: Iptservers) -> None:
    """A second ``iptserver run`` on the entry cannot listen, so it gives up (exit 1);
    the running daemon goes on routing: the second one touched none of its state."""
    schema = iptservers.schema(RESTART_SCHEMA)
    daemon = iptservers.start(schema)
    lab = daemon.lab
    assert_routes(lab)
    before = entry_state(lab)
    code, output = iptservers.attempt(schema)
    assert code == 1, output
    assert daemon.alive
    assert differences(before, entry_state(lab)) == []
    assert_routes(lab, resolve=False)  # mail.ru's learned entries too
    assert_routes(lab)
    assert "cannot start: another program listens for DNS on UDP 10.77.1.1:53" in output


# -- a bad schema on reload --------------------------------------------------------------

BEFORE_EXIT, AFTER_EXIT = "uk", "ru"
GUARDED_NAME = "www.bbc.co.uk"
GUARDED_NET = "203.0.113.130"


def guarded_schema(exit_name: str) -> str:
    return (
        BASE_SCHEMA
        + f"""
default: direct
rules:
  - exit: {exit_name}
    domains: [co.uk]
    nets: [203.0.113.128/25]
"""
    )


# (what is wrong, the broken schema)
BROKEN = [
    ("yaml-syntax", guarded_schema("ru").replace("[co.uk]", "[co.uk")),
    ("unknown-exit", guarded_schema("mars")),
    ("bad-network", guarded_schema("ru").replace("203.0.113.128/25", "203.0.113.300/25")),
    ("bad-regex", guarded_schema("ru").replace("[co.uk]", "['~(co\\.uk']")),
    ("two-problems", guarded_schema("mars").replace("/25", "/33")),
]


def check_errors(schema: Path) -> list[str]:
    """What ``iptserver check`` prints for a schema (its FILE:LINE:COL lines)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["check", str(schema)]) == 1
    return err.getvalue().splitlines()


def assert_ways(daemon: Running, way: str) -> None:
    lab = daemon.lab
    ((address, _),) = resolved(lab, GUARDED_NAME)
    assert lab.whoami("client", address) == way, f"{GUARDED_NAME}:\n{daemon.log}"
    assert lab.whoami("client", GUARDED_NET) == way, f"{GUARDED_NET}:\n{daemon.log}"


@pytest.mark.parametrize("broken", [b[1] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_bad_schema_on_reload_keeps_the_running_policy(iptservers: Iptservers, broken: str) -> None:
    """SIGHUP with a broken schema on disk: the daemon logs the errors ``check`` gives
    (FILE:LINE:COL: path: message), keeps running and keeps routing by the old schema;
    once the file is fixed, the next SIGHUP takes it."""
    daemon = iptservers.start(guarded_schema(BEFORE_EXIT))
    assert_ways(daemon, BEFORE_EXIT)

    iptservers.rewrite(daemon, broken)
    assert daemon.reload() is False, daemon.log
    errors = check_errors(daemon.schema)
    assert errors, "check finds nothing wrong"
    position = re.compile(rf"^{re.escape(str(daemon.schema))}:\d+:\d+: ")
    for line in errors:
        assert position.match(line), line
        assert line in daemon.output.splitlines(), f"not logged: {line}\n{daemon.log}"
    assert daemon.alive
    assert_ways(daemon, BEFORE_EXIT)

    iptservers.rewrite(daemon, guarded_schema(AFTER_EXIT))
    assert daemon.reload(), daemon.log
    assert_ways(daemon, AFTER_EXIT)


def test_a_reload_storm_under_load_fails_no_query_and_ends_on_the_last_good_schema(
    iptservers: Iptservers,
) -> None:
    """50 SIGHUPs in about 5 s while a client asks, the file on disk good or broken in
    turn: every query is answered, and the policy in force is the last good schema's."""
    daemon = iptservers.start(guarded_schema(BEFORE_EXIT))
    lab = daemon.lab
    texts = [
        lab.schema_text(iptservers.schema(guarded_schema(way))) for way in (BEFORE_EXIT, AFTER_EXIT)
    ]
    broken = BROKEN[0][1]
    stop = threading.Event()
    rcodes: list[str] = []
    load = threading.Thread(target=ask_and_record, args=(lab, stop, rcodes))
    load.start()
    try:
        for i in range(50):  # the file left on disk: AFTER_EXIT
            text = texts[1] if i == 49 else broken if i % 3 == 1 else texts[i % 2]
            swap_in(daemon.schema, text)
            daemon.proc.send_signal(signal.SIGHUP)
            time.sleep(0.1)
        wait_for_reloads(daemon, 50)
    finally:
        stop.set()
        load.join()
    assert daemon.alive
    assert rcodes and set(rcodes) == {"NOERROR"}, f"{len(rcodes)} queries: {set(rcodes)}"
    assert_ways(daemon, AFTER_EXIT)


def swap_in(path: Path, text: str) -> None:
    """Replace the schema file at once, as a careful deploy does (no half-written file)."""
    new = path.with_suffix(".new")
    new.write_text(text, encoding="utf-8")
    new.replace(path)


def ask_and_record(lab: Lab, stop: threading.Event, rcodes: list[str]) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        try:
            answer = lab.query("client", f"storm-{n}.bench.ru", server=ENTRY_DNS, timeout=3)
        except Exception as e:  # counted: a query the storm lost
            rcodes.append(f"no answer: {e}")
        else:
            rcodes.append(answer.rcode)


def wait_for_reloads(daemon: Running, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = daemon.output
        done = text.count("iptserver.daemon: reloaded ") + text.count("reload rejected")
        if done >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} reloads ended in {timeout} s:\n{daemon.log}")
