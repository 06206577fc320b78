"""The link watcher against the real kernel: events of interfaces made, brought up and
down, and deleted inside a test namespace, as the daemon receives them."""

from __future__ import annotations

import asyncio
import socket
import subprocess

from iptserver.dataplane.links import LinkWatcher, link_events, link_state
from iptserver.lab.netns import run_in, socket_in

Event = tuple[str, int | None]


def ip(netns: str, *commands: str) -> None:
    subprocess.run(
        ["ip", "-n", netns, "-batch", "-"], input="\n".join(commands), text=True, check=True
    )


def index_of(netns: str, iface: str) -> int:
    done = subprocess.run(
        ["ip", "-n", netns, "-o", "link", "show", "dev", iface],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split(":", 1)[0])


async def watch(netns: str, commands: list[str], *, rcvbuf: int | None = None) -> list[Event]:
    """The events a watcher in ``netns`` reports for ``commands`` (run before it reads);
    an overrun is reported as ("overrun", None)."""
    seen: list[Event] = []
    sock = socket_in(netns, socket.AF_NETLINK, socket.SOCK_RAW)
    watcher = LinkWatcher(
        lambda iface, index: seen.append((iface, index)),
        lambda: seen.append(("overrun", None)),
        sock,
    )
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        await asyncio.to_thread(ip, netns, *commands)
        watcher.start()
        await asyncio.sleep(0.2)  # the reader runs once the socket is readable
    finally:
        watcher.close()
    return seen


def test_an_interface_made_up_down_and_deleted(netns: str) -> None:
    events = asyncio.run(
        watch(
            netns,
            [
                "link add xdum type veth peer name xdump",
                "link set xdum up",
                "link set xdum down",
                "link del xdum",
            ],
        )
    )
    states = [index for iface, index in events if iface == "xdum"]
    # made (down), up, down, deleted; the kernel may repeat a state (carrier changes)
    changes = [index for n, index in enumerate(states) if n == 0 or index != states[n - 1]]
    assert len(changes) == 3 and changes[0] is None and changes[2] is None, states
    assert isinstance(changes[1], int) and changes[1] > 0, states


def test_an_interface_made_anew_has_another_index(netns: str) -> None:
    before = index_of(netns, "xuk")
    events = asyncio.run(
        watch(netns, ["link del xuk", "link add xuk type veth peer name xukp", "link set xuk up"])
    )
    assert ("xuk", None) in events
    assert events[-1] == ("xuk", index_of(netns, "xuk"))
    assert events[-1][1] != before


def test_link_state_is_the_index_while_up(netns: str) -> None:
    def state(iface: str) -> int | None:
        return run_in(netns, lambda: link_state(iface))

    assert state("xuk") == index_of(netns, "xuk")
    ip(netns, "link set xuk down")
    assert state("xuk") is None
    assert state("nosuch") is None


def test_lost_events_are_reported(netns: str) -> None:
    """More events than the socket holds: the watcher says so (the daemon then relinks
    every tunnel) instead of silently missing one."""
    commands = [f"link set xru {way}" for _ in range(200) for way in ("down", "up")]
    events = asyncio.run(watch(netns, commands, rcvbuf=4096))
    assert ("overrun", None) in events


def test_damaged_messages_yield_nothing() -> None:
    assert list(link_events(b"")) == []
    assert list(link_events(b"\xff" * 15)) == []
    # a header that claims more than the datagram holds
    assert list(link_events(b"\x00\x01\x00\x00\x10\x00" + b"\x00" * 10)) == []


def test_changes_of_mains_default_route_are_reported_and_others_not(netns: str) -> None:
    async def main_defaults(commands: list[str]) -> int:
        seen: list[str] = []
        sock = socket_in(netns, socket.AF_NETLINK, socket.SOCK_RAW)
        watcher = LinkWatcher(
            lambda iface, index: None,
            lambda: seen.append("overrun"),
            sock,
            on_main_default=lambda: seen.append("default"),
            route_sock=socket_in(netns, socket.AF_NETLINK, socket.SOCK_RAW),
        )
        try:
            await asyncio.to_thread(ip, netns, *commands)
            watcher.start()
            await asyncio.sleep(0.2)
        finally:
            watcher.close()
        return seen.count("default")

    ip(netns, "link set xuk up", "addr add 192.0.2.2/24 dev xuk")
    others = [
        "route add 198.51.100.7/32 dev xuk",  # a host route, as zebra's imports
        "route add default dev xuk table 100",  # an exit's table
    ]
    assert asyncio.run(main_defaults(others)) == 0
    changes = ["route add default via 192.0.2.1 dev xuk", "route del default"]
    assert asyncio.run(main_defaults(changes)) == 2


def test_a_flood_of_route_events_costs_no_link_event(netns: str) -> None:
    """20,000 routes written at once (a country's, and zebra's copies) overrun the route
    events: main's default is copied again, but no link event is lost (which would
    relink every tunnel)."""
    batch = [f"route add 10.{i // 256}.{i % 256}.0/24 dev xuk table 201" for i in range(20000)]

    async def flood() -> list[object]:
        seen: list[object] = []
        routes = socket_in(netns, socket.AF_NETLINK, socket.SOCK_RAW)
        watcher = LinkWatcher(
            lambda iface, index: seen.append((iface, index)),
            lambda: seen.append("overrun"),
            socket_in(netns, socket.AF_NETLINK, socket.SOCK_RAW),
            on_main_default=lambda: seen.append("default"),
            route_sock=routes,
        )
        routes.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            await asyncio.to_thread(ip, netns, "link set xuk up", *batch, "link set xuk down")
            watcher.start()
            await asyncio.sleep(0.5)
        finally:
            watcher.close()
        return seen

    seen = asyncio.run(flood())
    assert "overrun" not in seen
    assert "default" in seen  # the route events were lost: main's default copied again
    assert [e for e in seen if isinstance(e, tuple) and e[0] == "xuk"] == [("xuk", None)]
