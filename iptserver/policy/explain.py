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
from iptserver.policy.core import Candidate, Decision, MatchKind, Policy, Reason
from iptserver.schema.load import Loaded
from iptserver.schema.model import HOST_GATEWAY
from iptserver.schema.values import IPAddress, IPNetwork, normalize_name


@dataclass(frozen=True, slots=True)
class Query:
    """``NAME``, ``IP``, or ``NAME[,CNAME...]=IP`` (an IP seen in an answer for NAME)."""

    text: str
    names: tuple[str, ...]
    ip: IPAddress | None


def parse_query(text: str) -> Query:
    """A query as written on the command line or in ``?q=``; ValueError says what is wrong."""
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


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """A rule that matches the query: where it is written, and how strongly it matches."""

    rule: int
    line: int
    exit: str
    kind: MatchKind
    detail: str  # the pattern, net or "COUNTRY network" that matched
    name: str | None  # the name a domain pattern matched
    weight: int
    specificity: int  # prefix length; a host route for a domain match
    listed: str | None = None  # "LIST:LINE" when the pattern or net came from a list

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "line": self.line,
            "list": self.listed,
            "exit": self.exit,
            "kind": self.kind.value,
            "detail": self.detail,
            "name": self.name,
            "weight": self.weight,
            "specificity": self.specificity,
        }

    def describe(self, ip: IPAddress | None) -> str:
        what = {
            MatchKind.DOMAIN: f"domain {self.detail} matched {self.name}",
            MatchKind.NET: f"net {self.detail}",
            MatchKind.COUNTRY: f"country {self.detail}",
        }[self.kind]
        if self.listed is not None:
            what += f" (list {self.listed})"
        specificity = "host route" if self.kind is MatchKind.DOMAIN else f"/{self.specificity}"
        if self.kind is MatchKind.DOMAIN and ip is not None:
            specificity += f" /{self.specificity}"
        return (
            f"rule {self.rule} (line {self.line}, exit {self.exit}): {what}; "
            f"weight {self.weight}, {specificity}"
        )


@dataclass(frozen=True, slots=True)
class OfficeView:
    """A ``--from`` address in a mesh node's subnets: whether its traffic reaches the
    entry at all (``nodes.NAME.send``), so whether the decision applies to it."""

    node: str
    send: str  # "learned", "policy" or "all"
    reaches: bool  # the decision applies; else it leaves by the node's own uplink

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "send": self.send, "reaches_entry": self.reaches}

    def describe(self) -> str:
        head = f"from node {self.node!r} (send: {self.send}): "
        if self.reaches:
            how = {
                "all": "all of its traffic",
                "policy": "this address (announced for a rule with a tunnel exit)",
            }.get(self.send, "this DNS-learned address")
            return head + f"the entry routes {how}, as above"
        if self.send == "policy":
            return head + (
                "this leaves by the node's own uplink instead: only addresses of rules with "
                "a tunnel exit reach the entry (send: all sends everything, default included)"
            )
        return head + (
            "this leaves by the node's own uplink instead: only addresses learned from DNS "
            "for domain rules with a tunnel exit reach the entry (send: policy adds rules' "
            "nets and countries; send: all sends everything)"
        )


@dataclass(frozen=True, slots=True)
class Explanation:
    """Which exit a query takes, the rule that decided, the rules it beat, and GeoIP's view.

    The same values for people (:func:`format_text`) and for programs (:meth:`to_json`,
    what ``iptserver explain --json`` and ``GET /v1/explain`` give).
    """

    query: str
    client: IPAddress | None  # who asks (rules with sources apply to some clients)
    names: tuple[str, ...]
    ip: IPAddress | None
    exit: str | None  # None: the host's main routing table
    interface: str | None
    rule: int | None
    line: int | None
    reason: Reason
    match: RuleMatch | None
    beaten: tuple[RuleMatch, ...]
    geoip: tuple[str, IPNetwork] | None  # (country, network) of the IP
    office: OfficeView | None = None  # the client is behind a mesh node (an office)

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "from": str(self.client) if self.client is not None else None,
            "names": list(self.names),
            "ip": str(self.ip) if self.ip is not None else None,
            "exit": self.exit,
            "interface": self.interface,
            "rule": self.rule,
            "line": self.line,
            "reason": self.reason.value,
            "match": self.match.to_json() if self.match else None,
            "beaten": [c.to_json() for c in self.beaten],
            "geoip": {"country": self.geoip[0], "network": str(self.geoip[1])}
            if self.geoip
            else None,
            "office": self.office.to_json() if self.office else None,
        }


def explain(
    loaded: Loaded,
    policy: Policy,
    query: Query,
    geo: GeoIPDatabase | None = None,
    client: IPAddress | None = None,
) -> Explanation:
    """Decide ``query`` as the daemon would for ``client`` (None: a client no rule's
    sources name), and gather why."""
    source = policy.source_of(client)
    if query.ip is None:
        decision = policy.decide_name(query.names, source)
    elif query.names:
        decision = policy.decide(query.names, [query.ip], source)[0]
    else:
        decision = policy.decide_ip(query.ip, source)
    candidates = policy.candidates(query.names, query.ip, source)
    winner = next((c for c in candidates if c.rule == decision.rule), None)
    others = [c for c in candidates if c is not winner]
    interface = _interface(policy, decision)
    return Explanation(
        query=query.text,
        client=client,
        names=query.names,
        ip=query.ip,
        exit=decision.exit,
        interface=interface,
        rule=decision.rule,
        line=loaded.rule_lines[decision.rule] if decision.rule is not None else None,
        reason=decision.reason,
        match=_rule_match(loaded, policy, winner) if winner else None,
        beaten=tuple(_rule_match(loaded, policy, c) for c in others),
        geoip=geo.describe(query.ip) if geo is not None and query.ip is not None else None,
        office=_office(
            policy,
            client,
            learned=winner is not None
            and winner.kind is MatchKind.DOMAIN
            and interface not in (None, HOST_GATEWAY),
            announced=any(_announced(policy, c) for c in candidates),
        ),
    )


def _announced(policy: Policy, candidate: Candidate) -> bool:
    """Whether ``send: policy`` nodes are taught a route for this match: a net or
    country network of a rule (for every client) with a tunnel exit."""
    rule = policy.schema.rules[candidate.rule]
    return (
        candidate.kind is not MatchKind.DOMAIN
        and not rule.sources
        and policy.exits[rule.exit].interface != HOST_GATEWAY
    )


def _office(
    policy: Policy, client: IPAddress | None, *, learned: bool, announced: bool
) -> OfficeView | None:
    """The mesh node whose subnets hold ``client`` (not the entry's), and what it sends."""
    if client is None:
        return None
    for name, node in policy.schema.nodes.items():
        if node.entry or not any(
            client in net for net in node.subnets if net.version == client.version
        ):
            continue
        reaches = {"all": True, "policy": learned or announced}.get(node.send, learned)
        return OfficeView(name, node.send, reaches=reaches)
    return None


def _interface(policy: Policy, decision: Decision) -> str | None:
    if decision.exit is None:
        return None
    return policy.exits[decision.exit].interface


def _rule_match(loaded: Loaded, policy: Policy, c: Candidate) -> RuleMatch:
    return RuleMatch(
        rule=c.rule,
        line=loaded.rule_lines[c.rule],
        exit=policy.schema.rules[c.rule].exit,
        kind=c.kind,
        detail=c.detail,
        name=c.name,
        weight=c.weight,
        specificity=c.specificity,
        listed=_listed(loaded, c),
    )


def _listed(loaded: Loaded, c: Candidate) -> str | None:
    """Where in the rule's lists the matching pattern or net is written, if it is."""
    if c.kind is MatchKind.COUNTRY:
        return None
    for spec in loaded.schema.rules[c.rule].lists:
        parsed = loaded.lists[spec.location].parsed if spec.location in loaded.lists else None
        if parsed is None:
            continue
        if c.kind is MatchKind.DOMAIN:
            for i, pattern in enumerate(parsed.domains):
                if pattern.text == c.detail:
                    return str(parsed.domain_origin(i))
        else:
            for i, net in enumerate(parsed.networks):
                if str(net) == c.detail:
                    return str(parsed.network_origin(i))
    return None


_WHY = {
    Reason.RULE: "",
    Reason.DEFAULT: ": no rule matches, the schema's default",
    Reason.MAIN: ": no rule matches and the schema has no default",
    Reason.PRIVATE: ": private or mesh destination, never diverted",
}


def format_text(result: Explanation) -> str:
    """The explanation for a terminal: the query, the exit, then one line per rule."""
    names = ", ".join(result.names)
    ip = str(result.ip) if result.ip is not None else None
    head = f"{names} = {ip}" if names and ip else (ip or names)
    if result.client is not None:
        head += f" (from {result.client})"
    lines = [head, f"  -> {_where(result)}{_WHY[result.reason]}"]
    if result.match:
        lines.append(f"     {result.match.describe(result.ip)}")
    verb = "overrides" if result.reason is Reason.PRIVATE else "beat"
    lines += [f"     {verb} {other.describe(result.ip)}" for other in result.beaten]
    if result.ip is None and result.match:
        lines.append("     (for an answer IP; a net or country rule of higher weight may claim it)")
    if result.geoip:
        lines.append(f"     GeoIP: {result.geoip[0]} ({result.geoip[1]})")
    if result.office:
        lines.append(f"     {result.office.describe()}")
    return "\n".join(lines)


def _where(result: Explanation) -> str:
    if result.exit is None:
        return "main routing table (not diverted)"
    if result.interface == HOST_GATEWAY:
        return f"exit {result.exit} (host gateway, no tunnel)"
    return f"exit {result.exit} (interface {result.interface})"
