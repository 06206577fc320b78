"""The routing schema as the rest of the program receives it: validated and typed.

This is the native format. The legacy MRVPN2 formats are translated into it by
``iptserver.schema.legacy`` before validation, so there is one model and one set of checks.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from iptserver.schema.health import BLOCK, Health, HealthSettings, OnDown
from iptserver.schema.mesh import Clients, Node, NodeName, Tunnel, policy_table
from iptserver.schema.values import (
    Country,
    Domain,
    Duration,
    Endpoint,
    IPNetwork,
    Network,
    Source,
)

HOST_GATEWAY = "_DEFAULT"
"""The interface name that means "the host's own default gateway" (go direct)."""

ExitName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
Seconds = Annotated[StrictInt, Field(ge=1, le=7 * 24 * 3600)]
Mark = Annotated[StrictInt, Field(ge=1, le=0xFFFFFFFF)]
TableId = Annotated[StrictInt, Field(ge=1, le=0xFFFFFFFF)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Route(enum.Enum):
    INTERFACE = "interface"  # default route out of the exit's interface
    HOST_GATEWAY = "host-gateway"  # the host's own default route (no tunnel)


class Exit(_Model):
    """Where traffic leaves: a WireGuard interface, or the host gateway."""

    interface: str = Field(
        description=f"Interface the exit's traffic leaves by, or {HOST_GATEWAY} for the "
        "host's default gateway (no tunnel)",
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,14}$",
    )
    via: Annotated[str | None, Field(description="Next hop on the interface, if it needs one")] = (
        None
    )
    mark: Mark | None = Field(None, description="fwmark (default: assigned from kernel.mark_base)")
    table: TableId | None = Field(
        None, description="Routing table (default: assigned from kernel.table_base)"
    )
    health: Health | None = Field(
        None, description="How the exit is watched (without it, it is never considered down)"
    )
    on_down: OnDown = BLOCK

    @property
    def route(self) -> Route:
        return Route.HOST_GATEWAY if self.interface == HOST_GATEWAY else Route.INTERFACE

    @property
    def failover(self) -> tuple[str, ...]:
        """The exits that take the traffic while this one is down, in order."""
        return () if isinstance(self.on_down, str) else self.on_down

    @model_validator(mode="after")
    def _health_fits(self) -> Exit:
        if self.route is Route.HOST_GATEWAY and self.health is not None:
            raise ValueError(
                f"health watches a tunnel: the host gateway ({HOST_GATEWAY}) has no tunnel "
                "to probe through"
            )
        if self.route is Route.HOST_GATEWAY and self.failover:
            raise ValueError(f"on_down: the host gateway ({HOST_GATEWAY}) is never down")
        if self.failover and self.health is None:
            raise ValueError(
                "on_down lists exits to fail over to, but the exit has no health: "
                "an exit without health is never considered down"
            )
        return self


class ListFormat(enum.Enum):
    """The formats a rule's list may be written in (README, "Lists")."""

    AUTO = "auto"  # told from the name and the text
    DOMAINS = "domains"  # one domain a line; hosts-file lines and networks too
    CIDRS = "cidrs"  # one network or address a line
    DNSMASQ = "dnsmasq"  # server=/a/b/..., ipset=, nftset=, address=, local=
    V2FLY = "v2fly"  # a v2fly domain-list-community data file
    SING_BOX = "sing-box"  # a sing-box source rule-set (JSON)


DEFAULT_REFRESH = 24 * 3600


class RuleList(_Model):
    """Domains and networks that someone else maintains, read from a file or a URL."""

    url: str | None = Field(
        None,
        description="http(s) URL the daemon downloads the list from (and again every refresh)",
    )
    file: str | None = Field(
        None, description="Path of the list (relative: to the schema file's directory)"
    )
    format: ListFormat = ListFormat.AUTO
    refresh: Duration | None = Field(
        None,
        description="How often the list is downloaded (a URL; default 1d) or re-read when "
        "it changed (a file; default: on reload only): seconds, or 30s, 15m, 6h, 1d",
    )

    @field_validator("url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^https?://[^\s/?#]+(?:[/?#]\S*)?$", url):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return url

    @model_validator(mode="after")
    def _one_place(self) -> RuleList:
        if (self.url is None) == (self.file is None):
            raise ValueError("a list has either 'url' or 'file'")
        return self

    @property
    def location(self) -> str:
        """The URL or the path as written: how logs, metrics and ``explain`` name it."""
        return self.url if self.url is not None else str(self.file)

    @property
    def refresh_every(self) -> int | None:
        if self.refresh is not None:
            return self.refresh
        return DEFAULT_REFRESH if self.url is not None else None


class Rule(_Model):
    """Send what matches to ``exit``. See DESIGN §3 for how rules compete."""

    exit: str = Field(description="Name of the exit (a key of `exits`)")
    domains: list[Domain] = Field(default_factory=list)
    countries: list[Country] = Field(default_factory=list)
    nets: list[Network] = Field(default_factory=list)
    lists: list[RuleList] = Field(
        default_factory=list, description="Lists of domains and networks matched like these"
    )
    sources: list[Source] = Field(
        default_factory=list,
        description="Only for traffic from these clients: networks (CIDR), or names of "
        "clients.peers (default: every client)",
    )
    weight: StrictInt = Field(
        0, ge=-1_000_000, le=1_000_000, description="Higher weight wins before specificity"
    )
    hold: Seconds | None = Field(
        None, description="Seconds an IP learned from DNS stays routed (default: ttl.hold)"
    )
    comment: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Rule:
        if not (self.domains or self.countries or self.nets or self.lists):
            raise ValueError("empty rule: give at least one of domains, countries, nets, lists")
        return self


class Ttl(_Model):
    hold: Seconds = Field(
        300, description="Seconds an IP learned from DNS stays routed after its last answer"
    )
    client_max: Seconds | None = Field(
        None, description="Largest TTL handed to clients (default and upper bound: hold)"
    )


class RateLimit(_Model):
    """Queries a second the proxy takes from one client, and from its /24 (IPv4) or /56
    (IPv6) together; past it a client's UDP queries are dropped (TCP: REFUSED)."""

    client: Annotated[float, Field(ge=0)] = Field(500, description="Per address (0: no limit)")
    network: Annotated[float, Field(ge=0)] = Field(2000, description="Per /24 or /56 (0: no limit)")
    burst: Annotated[float, Field(gt=0, le=60)] = Field(
        2, description="Seconds of the rate a client may send at once"
    )


class Dns(_Model):
    listen: list[Endpoint] = Field(default_factory=list, description="Where the proxy listens")
    upstream: list[Endpoint] = Field(default_factory=list, description="Recursors to forward to")
    timeout: Annotated[float, Field(gt=0, le=30)] = 2.0
    block_doh: bool = Field(
        False,
        description="Reject, from the ingress, DNS over TLS/QUIC (port 853) and DNS over "
        "HTTPS to well-known resolvers: a client that bypasses our DNS bypasses the policy",
    )
    doh_servers: list[Network] = Field(
        default_factory=list, description="More DNS-over-HTTPS servers to reject (block_doh)"
    )
    allow: list[Network] = Field(
        default_factory=list,
        description="More client networks the proxy answers, besides the ingress "
        "interfaces' networks, the mesh's subnets and this host; every other address gets "
        "REFUSED (never an open resolver: nothing broader than a /8 or an IPv6 /16)",
    )
    rate_limit: RateLimit = RateLimit()

    @field_validator("allow")
    @classmethod
    def _not_everyone(cls, allow: list[IPNetwork]) -> list[IPNetwork]:
        for net in allow:
            if net.prefixlen < (8 if net.version == 4 else 16):
                raise ValueError(
                    f"{net} would make the proxy an open resolver: list your clients' "
                    "networks (nothing broader than a /8, or an IPv6 /16)"
                )
        return allow


class Api(_Model):
    listen: Endpoint | None = None


class Kernel(_Model):
    mark_base: Mark = Field(0x100, description="First fwmark; exits take consecutive marks")
    max_learned: Annotated[StrictInt, Field(ge=1024, le=1 << 27)] = Field(
        1_000_000,
        description="Entries each DNS-learned set holds at most (per weight and IP "
        "version); when one is full, new answers are not routed (fail-open/closed as "
        "set), counted and logged. A set made before keeps its size until it is remade",
    )
    table_base: TableId = Field(100, description="First routing table; exits take consecutive ids")
    export_table: TableId | None = Field(
        None,
        description="Also put each DNS-learned IP whose exit is a tunnel into this routing "
        "table as a host route out of the exit's interface, for as long as it is held, so "
        "FRR can announce it (zebra `ip import-table`); nothing forwards by it (default: off)",
    )
    policy_table: TableId | None = Field(
        None,
        description="For nodes with send: policy: the routing table that holds the nets and "
        "country networks of rules with a tunnel exit, aggregated, each out of its exit's "
        "interface, for FRR to announce (default: export_table + 1)",
    )
    export_delay_ms: Annotated[StrictInt, Field(ge=0, le=5000)] = Field(
        100,
        description="With export_table: an answer that adds a host route to the table is "
        "held back this long, so OSPF has taken the route to the mesh (an office) before "
        "the client can connect; answers whose routes are already there are not",
    )


class Schema(_Model):
    """A whole routing schema."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="iptserver routing schema",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    version: Literal[1] = 1
    exits: dict[ExitName, Exit] = Field(description="Exit name -> where its traffic leaves")
    rules: list[Rule] = Field(default_factory=list, description="Ordered routing rules")
    default: str | None = Field(None, description="Exit for destinations no rule matches")
    ingress: list[str] = Field(
        default_factory=list, description="Interfaces whose traffic is policy-routed"
    )
    mesh: list[Network] = Field(
        default_factory=list,
        description="Mesh subnets, never diverted (private ranges never are either)",
    )
    nodes: dict[NodeName, Node] = Field(
        default_factory=dict, description="Machines of the mesh (for iptserver render)"
    )
    tunnels: dict[NodeName, Tunnel] = Field(
        default_factory=dict, description="WireGuard tunnels between nodes, by tunnel name"
    )
    clients: Clients | None = Field(None, description="Mobile clients and where they connect")
    ttl: Ttl = Ttl()
    dns: Dns = Dns()
    api: Api = Api()
    kernel: Kernel = Kernel()
    health: HealthSettings = HealthSettings()

    def exit_of(self, rule: Rule) -> Exit:
        return self.exits[rule.exit]

    def policy_table(self) -> int | None:
        """The table of the routes ``send: policy`` nodes take (None: no node does)."""
        if not any(node.send == "policy" and not node.entry for node in self.nodes.values()):
            return None
        return policy_table(self.kernel.export_table, self.kernel.policy_table)

    def never_diverted(self) -> tuple[IPNetwork, ...]:
        """The mesh's own subnets: `mesh` as written plus the tunnels', nodes' and clients'."""
        nets: list[IPNetwork] = list(self.mesh)
        for tunnel in self.tunnels.values():
            nets += (tunnel.subnet,) if tunnel.subnet6 is None else (tunnel.subnet, tunnel.subnet6)
        nets += (net for node in self.nodes.values() for net in node.subnets)
        if self.clients is not None:
            nets.append(self.clients.subnet)
        return tuple(dict.fromkeys(nets))
