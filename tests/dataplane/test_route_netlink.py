"""Routes written and listed with iptserver's own rtnetlink messages, against the kernel."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

DRIVER = """
import ipaddress, json, socket
from iptserver.dataplane.route_netlink import RouteWire

wire = RouteWire()
xuk = socket.if_nametoindex("xuk")
nets = [ipaddress.ip_network(f"10.{i // 256}.{i % 256}.0/24") for i in range(3000)]
out = {}
out["written"] = wire.replace(201, 157, [(n, xuk) for n in nets])
out["six"] = wire.replace(201, 157, [(ipaddress.ip_network("2001:db8::/32"), None)])
out["refused"] = wire.replace(201, 157, [(ipaddress.ip_network("192.0.2.0/24"), 99999)])
out["listed"] = len(wire.dump(4, 201, 157))
out["other_protocol"] = len(wire.dump(4, 201, 3))
out["main_of_xuk"] = [str(r.network) for r in wire.dump(4, 254, oif=xuk)]
out["blackhole"] = [(str(r.network), r.kind, r.oif) for r in wire.dump(6, 201, 157)]
out["defaults"] = [(str(r.network), r.gateway) for r in wire.dump(4, 254, defaults=True)]
out["missing_table"] = wire.dump(4, 77) + wire.dump(6, 77)
out["deleted"] = wire.delete(201, 157, nets[:1000] + nets[:1])  # one twice: gone is fine
out["left"] = len(wire.dump(4, 201, 157))
print(json.dumps(out))
"""


def test_many_routes_written_listed_by_table_and_deleted(netns: str) -> None:
    setup = [
        "addr add 198.18.0.1/30 dev xru",
        "route add default via 198.18.0.2",
        "addr add 10.250.0.1/24 dev xuk",
    ]
    for command in setup:
        subprocess.run(["ip", "-n", netns, *command.split()], check=True)
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", DRIVER],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["written"] == [] and out["six"] == []
    assert out["refused"] == ["192.0.2.0/24: No such device"]
    assert out["listed"] == 3000 and out["other_protocol"] == 0
    assert out["main_of_xuk"] == ["10.250.0.0/24"]  # not table 201's 3,000
    assert out["blackhole"] == [["2001:db8::/32", 6, None]]
    assert out["defaults"] == [["0.0.0.0/0", "198.18.0.2"]]
    assert out["missing_table"] == []
    assert out["deleted"] == [] and out["left"] == 2000
    shown = subprocess.run(
        ["ip", "-n", netns, "route", "show", "table", "201", "10.11.183.0/24"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown.strip() == "10.11.183.0/24 dev xuk proto 157", shown  # the last one
