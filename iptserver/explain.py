"""``iptserver explain``: why a name or an IP takes the exit it takes.

The decision comes from the same ``Policy.decide*`` calls the daemon makes; the list of
rules it beat comes from ``Policy.candidates``. Both are shown, for people (text) and for
programs (JSON).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from iptserver.geoip import GeoIPDatabase
from iptserver.policy import Candidate, Decision, Policy, Reason
from iptserver.schema.load import Loaded
from iptserver.schema.model import HOST_GATEWAY
from iptserver.schema.values import IPAddress, normalize_name


@dataclass(frozen=True, slots=True)
class Query:
    """``NAME``, ``IP``, or ``NAME[,CNAME...]=IP`` (an IP seen in an answer for NAME)."""

    text: str
    names: tuple[str, ...]
    ip: IPAddress | None


def parse_query(text: str) -> Query:
    names_part, sep, ip_part = text.partition("=")
    if sep:
        try:
            ip = ipaddress.ip_address(ip_part.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not NAME=IP: {ip_part!r} is not an IP address") from None
        names = tuple(n for n in (normalize_name(p) for p in names_part.split(",")) if n)
        if not names:
            raise ValueError(f"{text!r} is not NAME=IP: the name is missing")
        return Query(text, names, ip)
    try:
        return Query(text, (), ipaddress.ip_address(text.strip()))
    except ValueError:
        pass
    names = tuple(n for n in (normalize_name(p) for p in text.split(",")) if n)
    if not names:
        raise ValueError(f"{text!r} is neither a name nor an IP address")
    return Query(text, names, None)


def explain(
    loaded: Loaded, policy: Policy, query: Query, geo: GeoIPDatabase | None = None
) -> dict[str, Any]:
    if query.ip is None:
        decision = policy.decide_name(query.names)
    elif query.names:
        decision = policy.decide(query.names, [query.ip])[0]
    else:
        decision = policy.decide_ip(query.ip)
    candidates = policy.candidates(query.names, query.ip)
    winner = next((c for c in candidates if c.rule == decision.rule), None)
    others = [c for c in candidates if c is not winner]
    located = geo.describe(query.ip) if geo is not None and query.ip is not None else None
    return {
        "query": query.text,
        "names": list(query.names),
        "ip": str(query.ip) if query.ip is not None else None,
        "exit": decision.exit,
        "interface": _interface(policy, decision),
        "rule": decision.rule,
        "line": loaded.rule_lines[decision.rule] if decision.rule is not None else None,
        "reason": decision.reason.value,
        "match": _candidate(loaded, policy, winner) if winner else None,
        "beaten": [_candidate(loaded, policy, c) for c in others],
        "geoip": {"country": located[0], "network": str(located[1])} if located else None,
    }


def _interface(policy: Policy, decision: Decision) -> str | None:
    if decision.exit is None:
        return None
    return policy.exits[decision.exit].interface


def _candidate(loaded: Loaded, policy: Policy, c: Candidate) -> dict[str, Any]:
    return {
        "rule": c.rule,
        "line": loaded.rule_lines[c.rule],
        "exit": policy.schema.rules[c.rule].exit,
        "kind": c.kind.value,
        "detail": c.detail,
        "name": c.name,
        "weight": c.weight,
        "specificity": c.specificity,
    }


def format_text(result: dict[str, Any]) -> str:
    ip, names = result["ip"], ", ".join(result["names"])
    head = f"{names} = {ip}" if names and ip else (ip or names)
    lines = [head]
    exit_name, interface = result["exit"], result["interface"]
    if exit_name is None:
        where = "main routing table (not diverted)"
    elif interface == HOST_GATEWAY:
        where = f"exit {exit_name} (host gateway, no tunnel)"
    else:
        where = f"exit {exit_name} (interface {interface})"
    reason = Reason(result["reason"])
    why = {
        Reason.RULE: "",
        Reason.DEFAULT: ": no rule matches, the schema's default",
        Reason.MAIN: ": no rule matches and the schema has no default",
        Reason.PRIVATE: ": private or mesh destination, never diverted",
    }[reason]
    lines.append(f"  -> {where}{why}")
    if result["match"]:
        lines.append(f"     {_describe(result['match'], result['ip'])}")
    for other in result["beaten"]:
        verb = "overrides" if reason is Reason.PRIVATE else "beat"
        lines.append(f"     {verb} {_describe(other, result['ip'])}")
    if result["ip"] is None and result["match"]:
        lines.append("     (for an answer IP; a net or country rule of higher weight may claim it)")
    if result["geoip"]:
        lines.append(f"     GeoIP: {result['geoip']['country']} ({result['geoip']['network']})")
    return "\n".join(lines)


def _describe(c: dict[str, Any], ip: str | None) -> str:
    what = {
        "domain": f"domain {c['detail']} matched {c['name']}",
        "net": f"net {c['detail']}",
        "country": f"country {c['detail']}",
    }[c["kind"]]
    specificity = "host route" if c["kind"] == "domain" else f"/{c['specificity']}"
    if c["kind"] == "domain" and ip is not None:
        specificity += f" /{c['specificity']}"
    return (
        f"rule {c['rule']} (line {c['line']}, exit {c['exit']}): {what}; "
        f"weight {c['weight']}, {specificity}"
    )
