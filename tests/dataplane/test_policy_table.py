"""kernel.policy_table against the real kernel: the routes ``send: policy`` nodes take."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.dataplane.test_export import Driver, routes
from tests.dataplane.test_kernel import sh

EXPORT, POLICY = 242, 243
SCHEMA = f"""
exits:
  uk: {{interface: xuk}}
  ru: {{interface: xru}}
  direct: {{interface: _DEFAULT}}
ingress: [ing0, xof]
kernel: {{export_table: {EXPORT}}}
rules:
  - {{exit: uk, nets: [198.51.100.0/25, 198.51.100.128/25, "2001:db8:1::/48"]}}
  - {{exit: ru, nets: [203.0.113.0/24, 10.1.0.0/16]}}
  - {{exit: direct, nets: [192.0.2.0/24]}}
nodes:
  entry: {{entry: true}}
  office: {{subnets: [10.88.0.0/24], send: policy}}
tunnels:
  xof: {{subnet: 10.99.0.0/30, hosts: {{entry: {{expose: true}}, office: {{}}}}}}
"""


@pytest.fixture
def dataplane(netns: str) -> Iterator[Driver]:
    one = Driver(netns)
    yield one
    one.close()


def test_the_policy_table_holds_tunnel_exits_nets_aggregated_and_follows_the_tunnels(
    netns: str, dataplane: Driver, write_schema: Callable[[str], Path]
) -> None:
    schema = str(write_schema(SCHEMA))
    assert dataplane(apply=schema) == []
    # The /25s as one /24, through uk; not the direct net, not a private one.
    wanted = {"198.51.100.0/24": "xuk", "203.0.113.0/24": "xru"}
    assert routes(netns, POLICY) == wanted
    assert str(POLICY) not in sh("ip", "-n", netns, "rule", "show")  # FRR's, not ours

    # A reload that changes nothing writes nothing: OSPF withdraws nothing.
    monitor = subprocess.Popen(
        ["ip", "-n", netns, "monitor", "route"], stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(0.2)
        assert dataplane(apply=schema) == []
        time.sleep(0.2)
    finally:
        monitor.terminate()
        said, _ = monitor.communicate(timeout=5)
    assert f"table {POLICY}" not in said, said

    # uk's tunnel gone (the daemon hears it from its link watcher): its nets stay, as
    # blackholes; made anew, through it again.
    sh("ip", "-n", netns, "link", "del", "xuk")
    dataplane(relink="xuk")
    assert routes(netns, POLICY) == {**wanted, "198.51.100.0/24": "blackhole"}
    sh("ip", "-n", netns, "link", "add", "xuk", "type", "veth", "peer", "name", "xukp")
    sh("ip", "-n", netns, "link", "set", "xuk", "up")
    sh("ip", "-n", netns, "link", "set", "xukp", "up")
    dataplane(relink="xuk")
    assert routes(netns, POLICY) == wanted

    # The office back to learned: the table is emptied; a stop leaves nothing either.
    assert dataplane(apply=str(write_schema(SCHEMA.replace(", send: policy", "")))) == []
    assert routes(netns, POLICY) == {}
    assert dataplane(apply=schema) == []
    assert routes(netns, POLICY) == wanted
    dataplane(stop=False)
    assert routes(netns, POLICY) == {}
