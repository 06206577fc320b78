"""``dnsmasq`` in a node of the lab, for the benches that run there: the peer
(``dnsmasq --ipset`` with its cache off, as a user routes by name without iptserver) and
a fast upstream (answering in C what the lab's Python authority would be too slow for).
"""

from __future__ import annotations

import subprocess

from iptserver.lab import Lab, LabError


def start_dnsmasq(
    lab: Lab,
    node: str,
    listen: str,
    *options: str,
    port: int = 53,
    probe: tuple[str, str],
) -> subprocess.Popen[bytes]:
    """dnsmasq on ``listen``:``port`` in ``node`` (no cache, no pid file, nothing read
    from the host), started once ``probe`` (asking node, name) gets NOERROR from it."""
    proc = lab.spawn(
        node,
        ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--user=root",
         f"--listen-address={listen}", f"--port={port}", "--bind-interfaces",
         "--cache-size=0", "--pid-file=", *options],
        name=f"dnsmasq-{port}",
    )  # fmt: skip
    asker, name = probe
    lab.wait_for(
        f"dnsmasq on {listen}:{port}", lambda: answers(lab, asker, name, listen, port), [proc]
    )
    return proc


def answers(lab: Lab, node: str, name: str, server: str, port: int) -> bool:
    try:
        answer = lab.query(node, name, server=server, port=port, timeout=1)
    except LabError:
        return False
    return answer.rcode == "NOERROR"


def make_set(lab: Lab, name: str, family: str) -> None:
    """A ``hash:ip`` set in the entry for dnsmasq's ``--ipset``, entries held 300 s."""
    lab.run("entry", ["ipset", "create", name, "hash:ip", "family", family, "timeout", "300"])
