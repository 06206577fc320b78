"""The mangle chain that marks ingress traffic, and the DNS redirect, via python-iptables.

The chain is rebuilt whole in one table commit, so a reload never leaves it half
written. Only our chains and the jumps into them are touched.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import iptc

from iptserver.dataplane.plan import (
    CHAIN,
    DNS_CHAIN,
    DOH_CHAIN,
    GUARD_CHAIN,
    MARK_MASK,
    KernelPlan,
    SetPlan,
)
from iptserver.errors import DataplaneError

_MASK = f"0x{MARK_MASK:x}"


def _tables(version: int, name: str) -> iptc.Table:
    return iptc.Table(name) if version == 4 else iptc.Table6(name)


def _fresh_table(version: int, name: str) -> iptc.Table:
    """The table as the kernel holds it now, ready for changes committed at once.

    python-iptables keeps one libiptc handle per table, and a handle goes stale once
    committed: committing it again hands the kernel the rule count read with the handle,
    and the kernel refuses (EAGAIN) when the table has changed since: every reload did.
    So every batch starts from a freshly read handle (refresh() drops the old one, with
    whatever a failed commit left pending on it).
    """
    table = _tables(version, name)
    table.autocommit = True
    table.refresh()
    table.autocommit = False
    return table


def _rule(version: int) -> iptc.Rule:
    return iptc.Rule() if version == 4 else iptc.Rule6()


def _chain(table: iptc.Table, name: str) -> iptc.Chain:
    if table.is_chain(name):
        chain = iptc.Chain(table, name)
        chain.flush()
        return chain
    return table.create_chain(name)


def _marked(version: int, target: str) -> iptc.Rule:
    """``-m mark ! --mark 0/MASK -j TARGET``"""
    rule = _rule(version)
    rule.create_match("mark").mark = f"!0x0/{_MASK}"
    rule.create_target(target)
    return rule


def _save(version: int, only_marked: bool) -> iptc.Rule:
    rule = _rule(version)
    if only_marked:
        rule.create_match("mark").mark = f"!0x0/{_MASK}"
    rule.create_target("CONNMARK").save_mark = ""
    return rule


def _ensure_jumps(
    table: iptc.Table, hook: str, target: str, ingress: Sequence[str], version: int
) -> None:
    chain = iptc.Chain(table, hook)
    present = {r.in_interface for r in chain.rules if r.target.name == target}
    for interface in ingress:
        if interface not in present:
            rule = _rule(version)
            rule.in_interface = interface
            rule.create_target(target)
            chain.insert_rule(rule)
    # Interfaces no longer in the schema, one at a time: a deletion makes the handles of
    # the rules read before it stale (the second of two then fails "No chain/target").
    while stale := [
        r for r in chain.rules if r.target.name == target and r.in_interface not in ingress
    ]:
        chain.delete_rule(stale[0])


def install(plan: KernelPlan, dns_port: int | None) -> None:
    """(Re)write the chains for both families; hook them on the ingress interfaces."""
    for version in (4, 6):
        try:
            _install_mangle(plan, version)
            _install_dns(plan, version, dns_port)
            _install_doh(plan, version)
            _install_guard(plan, version)
        except (iptc.IPTCError, iptc.XTablesError) as e:
            family = "iptables" if version == 4 else "ip6tables"
            raise DataplaneError(f"{family}: cannot install the {CHAIN} chains: {e}") from e


def _install_mangle(plan: KernelPlan, version: int) -> None:
    table = _fresh_table(version, iptc.Table.MANGLE)
    chain = _chain(table, CHAIN)
    family = 0 if version == 4 else 1
    rule = _rule(version)
    rule.create_target("CONNMARK").restore_mark = ""
    chain.append_rule(rule)  # an established connection keeps its exit
    chain.append_rule(_marked(version, "RETURN"))
    rule = _rule(version)
    rule.create_match("set").match_set = [plan.private[family].name, "dst"]
    rule.create_target("RETURN")
    chain.append_rule(rule)
    general = {c.weight: c for c in plan.classes}
    for source in plan.sources:
        _mark_by_sets(
            version,
            _chain(table, source.chain),
            [
                set_plan
                for c in source.classes
                for set_plan in (
                    c.learned[family],
                    *((general[c.weight].learned[family],) if c.weight in general else ()),
                    c.static[family],
                )
            ],
        )
        rule = _rule(version)
        rule.create_match("set").match_set = [source.clients[family].name, "src"]
        rule.create_target(source.chain)
        chain.append_rule(rule)
        chain.append_rule(_marked(version, "RETURN"))
    _mark_by_sets(
        version, chain, [s for c in plan.classes for s in (c.learned[family], c.static[family])]
    )
    wanted = {source.chain for source in plan.sources}
    for stale in table.chains:  # source classes that are gone (nothing jumps there now)
        if stale.name.startswith(f"{CHAIN}-C") and stale.name not in wanted:
            stale.flush()
            stale.delete()
    if plan.default_mark is not None:
        rule = _rule(version)
        rule.create_target("MARK").set_xmark = f"0x{plan.default_mark:x}/{_MASK}"
        chain.append_rule(rule)
        chain.append_rule(_save(version, only_marked=False))
    _ensure_jumps(table, "PREROUTING", CHAIN, plan.ingress, version)
    table.commit()
    table.autocommit = True


def _mark_by_sets(version: int, chain: iptc.Chain, sets: Sequence[SetPlan]) -> None:
    """Each set in turn: its entry's mark for the packet, saved for the connection, done."""
    for set_plan in sets:
        rule = _rule(version)
        rule.create_match("set").match_set = [set_plan.name, "dst"]
        target = rule.create_target("SET")
        target.map_set = [set_plan.name, "dst"]
        target.map_mark = ""
        chain.append_rule(rule)
        chain.append_rule(_save(version, only_marked=True))
        chain.append_rule(_marked(version, "RETURN"))


def _install_dns(plan: KernelPlan, version: int, port: int | None) -> None:
    """Port 53 arriving on the ingress goes to the proxy (REDIRECT: the interface's own
    address), so clients that ask another resolver are answered (and routed) by us."""
    table = _fresh_table(version, iptc.Table.NAT)
    chain = _chain(table, DNS_CHAIN)
    if port is not None and version == 4:
        for protocol in ("udp", "tcp"):
            rule = _rule(version)
            rule.protocol = protocol
            rule.create_match(protocol).dport = "53"
            rule.create_target("REDIRECT").to_ports = str(port)
            chain.append_rule(rule)
    _ensure_jumps(table, "PREROUTING", DNS_CHAIN, plan.ingress if port else (), version)
    table.commit()
    table.autocommit = True
    if port is not None and version == 6:
        _redirect_v6(port)


def _install_doh(plan: KernelPlan, version: int) -> None:
    """With dns.block_doh: reject DoT/DoQ (853) and DoH to known servers from the ingress,
    with a reset so that clients fall back to plain DNS at once."""
    table = _fresh_table(version, iptc.Table.FILTER)
    if plan.doh is None:
        if table.is_chain(DOH_CHAIN):
            _ensure_jumps(table, "FORWARD", DOH_CHAIN, (), version)
            chain = iptc.Chain(table, DOH_CHAIN)
            chain.flush()
            chain.delete()
            table.commit()
        table.autocommit = True
        return
    chain = _chain(table, DOH_CHAIN)
    doh_set = plan.doh[0 if version == 4 else 1].name
    for port, only_known in (("853", False), ("443", True)):
        for protocol in ("tcp", "udp"):
            rule = _rule(version)
            rule.protocol = protocol
            rule.create_match(protocol).dport = port
            if only_known:
                rule.create_match("set").match_set = [doh_set, "dst"]
            target = rule.create_target("REJECT")
            if protocol == "tcp":
                target.reject_with = "tcp-reset"
            chain.append_rule(rule)
    _ensure_jumps(table, "FORWARD", DOH_CHAIN, plan.ingress, version)
    table.commit()
    table.autocommit = True


def _install_guard(plan: KernelPlan, version: int) -> None:
    """The kernel's share of dns.rate_limit (``DnsGuard``), in the raw table: UDP DNS to
    the proxy (its addresses, and port 53 from the ingress) goes to a chain of
    hashlimit rules, once, that drop a client's datagrams past the rate. Written with
    iptables-restore: python-iptables cannot encode the hashlimit match."""
    guard = plan.guard
    present = _restore(version, None)
    if guard is None:
        _remove_guard(version, present)
        return
    lines = [f":{GUARD_CHAIN} - [0:0]", f":{GUARD_CHAIN}-L - [0:0]"]  # made, or flushed
    if f"-A PREROUTING -j {GUARD_CHAIN}" not in present:
        lines.append(f"-I PREROUTING -j {GUARD_CHAIN}")
    udp = "-p udp -m udp --dport"
    lines += [f"-A {GUARD_CHAIN} -i {iface} {udp} 53 -g {GUARD_CHAIN}-L" for iface in plan.ingress]
    for address, port in guard.listen:
        if address.version == version:
            to = "-m addrtype --dst-type LOCAL" if address.is_unspecified else f"-d {address}"
            lines.append(f"-A {GUARD_CHAIN} {to} {udp} {port} -g {GUARD_CHAIN}-L")
    for kind, rate, mask in (
        ("c", guard.client, 0),
        ("n", guard.network, 24 if version == 4 else 56),
    ):
        if not rate:
            continue
        rate = min(rate, 1_000_000)
        burst = max(1, min(round(rate * guard.burst), 10_000))
        lines.append(
            f"-A {GUARD_CHAIN}-L -m hashlimit --hashlimit-above {rate}/sec "
            f"--hashlimit-burst {burst} --hashlimit-mode srcip "
            + (f"--hashlimit-srcmask {mask} " if mask else "")
            # the rate in the name: the kernel keeps a table's first settings for its name
            + f"--hashlimit-name ipts{version}{kind}{rate} -j DROP"
        )
    _restore(version, lines)


def guard_drops() -> int:
    """DNS datagrams the kernel dropped past the rate (both families), from the
    hashlimit rules' counters (0 when there are none)."""
    dropped = 0
    for version in (4, 6):
        tool = "iptables-legacy-save" if version == 4 else "ip6tables-legacy-save"
        try:
            done = subprocess.run(
                [tool, "-t", "raw", "-c"], text=True, capture_output=True, check=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", "") or e
            raise DataplaneError(f"{tool}: cannot read the {GUARD_CHAIN} counters: {detail}") from e
        for line in done.stdout.splitlines():
            if f"-A {GUARD_CHAIN}-L " in line and line.startswith("["):
                dropped += int(line[1 : line.index(":")])
    return dropped


def _remove_guard(version: int, present: str | None = None) -> None:
    present = _restore(version, None) if present is None else present
    chains = [chain for chain in (GUARD_CHAIN, f"{GUARD_CHAIN}-L") if f":{chain} " in present]
    lines = (
        [f"-D PREROUTING -j {GUARD_CHAIN}"] if f"-A PREROUTING -j {GUARD_CHAIN}" in present else []
    )
    lines += [f"-F {chain}" for chain in chains] + [f"-X {chain}" for chain in chains]
    if lines:
        _restore(version, lines)


def _restore(version: int, lines: list[str] | None) -> str:
    """Apply ``lines`` to the raw table in one commit (iptables-legacy-restore
    --noflush); with None, read the table (iptables-legacy-save). Returns the output."""
    tool = "iptables-legacy" if version == 4 else "ip6tables-legacy"
    argv = [f"{tool}-save", "-t", "raw"] if lines is None else [f"{tool}-restore", "--noflush"]
    text = None if lines is None else "*raw\n" + "".join(f"{line}\n" for line in lines) + "COMMIT\n"
    try:
        done = subprocess.run(
            argv, input=text, text=True, capture_output=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", "") or e
        raise DataplaneError(f"{tool}: cannot write the {GUARD_CHAIN} chain: {detail}") from e
    return done.stdout


def _redirect_v6(port: int) -> None:
    """The IPv6 REDIRECT rules, through ip6tables-legacy-restore: python-iptables loads the
    REDIRECT extension for one family per process, and IPv4 has it. The chain was just
    flushed, so the rules are appended once."""
    rules = "".join(
        f"-A {DNS_CHAIN} -p {protocol} -m {protocol} --dport 53 -j REDIRECT --to-ports {port}\n"
        for protocol in ("udp", "tcp")
    )
    try:
        subprocess.run(
            ["ip6tables-legacy-restore", "--noflush"],
            input=f"*nat\n{rules}COMMIT\n",
            text=True,
            capture_output=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", "") or e
        raise DataplaneError(f"ip6tables: cannot redirect IPv6 DNS to port {port}: {detail}") from e


def remove() -> None:
    """Unhook and delete our chains (both families)."""
    for version in (4, 6):
        for table_name, chain_name, hook in (
            (iptc.Table.MANGLE, CHAIN, "PREROUTING"),
            (iptc.Table.NAT, DNS_CHAIN, "PREROUTING"),
            (iptc.Table.FILTER, DOH_CHAIN, "FORWARD"),
        ):
            try:
                table = _tables(version, table_name)
                table.autocommit = True
                table.refresh()
                if not table.is_chain(chain_name):
                    continue
                _ensure_jumps(table, hook, chain_name, (), version)
                chain = iptc.Chain(table, chain_name)
                chain.flush()
                chain.delete()
                for source_chain in table.chains:  # the source classes' (now unused)
                    if source_chain.name.startswith(f"{chain_name}-C"):
                        source_chain.flush()
                        source_chain.delete()
            except (iptc.IPTCError, iptc.XTablesError) as e:
                raise DataplaneError(f"cannot remove chain {chain_name}: {e}") from e
        _remove_guard(version)
