"""Benchmark of the policy core against a linear scan of the rules, MRVPN2 style.

What is measured, on one generated schema (deterministic for a given ``--seed``):

* the schema: 10,000 suffix domain patterns, 200 regular expressions in the legacy
  ``~REGEX`` form, 5,000 networks and 3 countries, spread over about 2,000 rules of
  weight 0, 10 or 20, with 3 exits and a default (one country is in two rules of equal
  weight, so that the tie rule "written first wins" is exercised too);
* load + compile: ``parse_schema`` on the YAML text (parse, translate, validate) and
  ``Policy(schema, geo)`` (build the lookup tables), timed separately and together;
* the core: ``Policy.decide(names, [ip])`` over every query (a query name, sometimes a
  CNAME, and one IP of the answer), best of ``--repeat`` runs;
* the linear scan: what MRVPN2 did, written here: for each destination, every rule in
  order, every domain pattern (``re.match`` for ``~`` patterns, compiled once; a string
  suffix test for suffix patterns), every net (``ip in net``) and the countries (one GeoIP
  lookup per IP); the winner is the best (weight, specificity, -rule index). It is slow,
  so it runs once on the first ``--sample`` queries.

Both sides get the same parsed inputs (names as DNS gives them, IPs already
``ipaddress`` objects) and the same in-memory GeoIP table, so the ratio compares the
matching algorithms only. The garbage collector is off while timing, as in ``timeit``.

On the sample, the rule the linear scan picks must be the rule the core picks: this is
a correctness check of the core, and the only thing the exit status depends on (1 on
any disagreement). The goals of the issue (>= 100x the linear scan, >= 200,000
decisions/s on one core, load + compile < 1 s) are printed next to the measured values
and never asserted: timings depend on the machine.

Run: ``python bench/policy.py [--seed N] [--queries N] [--sample N] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from iptserver.policy.core import PRIVATE_NETS, Decision, Policy, Reason
from iptserver.policy.prefixes import PrefixMap
from iptserver.schema.load import parse_schema
from iptserver.schema.model import Schema
from iptserver.schema.values import IPAddress, IPNetwork, PatternKind, normalize_name

SUFFIX_PATTERNS = 10_000
REGEXES = 200
NETS = 5_000
GEO_NETWORKS = 400
EXITS = {"uk": "wg-uk", "ru": "wg-ru", "us": "wg-us"}
GEO_COUNTRIES = ("GB", "RU", "US", "DE", "FR", "NL", "JP", "CN", "BR", "IN")
DEFAULT_EXIT = "us"
WEIGHTS = (0, 0, 0, 10, 10, 20)

T = TypeVar("T")

GOAL_RATIO = 100.0
GOAL_RATE = 200_000.0
GOAL_LOAD = 1.0
# The large-list schema (issue "Rule lists"): entries, and its goals.
LIST_DOMAINS = 500_000  # 400,000 in a plain list, 100,000 in a dnsmasq file
LIST_NETS = 200_000
GOAL_LIST_COMPILE = 3.0  # seconds: lists read, the policy and the kernel plan built
GOAL_LIST_RSS = 300.0  # MB of growth
GOAL_LIST_RATE = 0.8  # decisions/s against the small schema's

# Words of the generated names; the three sets are disjoint so that a "random" name
# matches a rule only by the semantics of a pattern, not by accident of the generator.
SUFFIX_WORDS = (
    "example",
    "shop",
    "news",
    "media",
    "cloud",
    "video",
    "static",
    "mail",
    "game",
    "bank",
    "travel",
    "music",
    "forum",
    "photo",
    "store",
    "tube",
    "social",
    "search",
    "maps",
    "wiki",
)
REGEX_WORDS = ("site", "portal", "stream", "track", "ads", "svc", "edge", "feed", "pay", "chat")
TLDS = ("com", "net", "org", "io", "ru", "co.uk", "de", "tv", "me", "info")
LABELS = ("www", "api", "m", "cdn", "img", "static", "login", "a.b", "x1.eu", "s3")

# IPv4 prefix lengths of the rule nets, weighted towards the /24s of real block lists.
V4_LENGTHS = list(range(8, 29))
V4_WEIGHTS = [1, 2, 2, 2, 2, 10, 10, 10, 10, 20, 20, 20, 20, 20, 30, 40, 150, 15, 15, 15, 15]


# -- the schema -----------------------------------------------------------------------


@dataclass
class RuleSpec:
    exit: str
    weight: int
    domains: list[str] = field(default_factory=list)
    nets: list[IPNetwork] = field(default_factory=list)
    countries: list[str] = field(default_factory=list)


@dataclass
class Generated:
    """The schema text and what the query generator draws matching names and IPs from."""

    text: str
    rules: list[RuleSpec]
    suffix_names: list[str]  # names that match some suffix pattern
    suffix_misses: list[str]  # names that look close to a suffix pattern but are not under it
    regex_names: list[str]  # names that match some regex
    regex_misses: list[str]
    nets: list[IPNetwork]
    geo: list[tuple[IPNetwork, str]]


def _host(rng: random.Random, words: Sequence[str]) -> tuple[str, str]:
    """A registrable name like example123.com, and its TLD."""
    tld = rng.choice(TLDS)
    return f"{rng.choice(words)}{rng.randrange(100_000)}.{tld}", tld


def _suffix_patterns(rng: random.Random) -> tuple[list[str], list[str], list[str]]:
    """Patterns as written, names under them, and near misses."""
    patterns: list[str] = []
    names: list[str] = []
    misses: list[str] = []
    taken: set[str] = set()
    while len(patterns) < SUFFIX_PATTERNS:
        r = rng.random()
        if r < 0.05 and patterns:  # the same pattern in a second rule
            pattern = rng.choice(patterns)
            patterns.append(pattern)
            continue
        if r < 0.10 and patterns:  # a name under an existing pattern, in another rule
            parent = rng.choice(patterns).lstrip("*.")
            base = f"{rng.choice(LABELS)}.{parent}"
            pattern = base
        else:
            base, _ = _host(rng, SUFFIX_WORDS)
            if base in taken:
                continue
            style = rng.random()
            pattern = f"*.{base}" if style < 0.2 else f".{base}" if style < 0.25 else base
        taken.add(base)
        patterns.append(pattern)
        names.append(f"{rng.choice(LABELS)}.{base}")
        if not pattern.startswith("*."):
            names.append(base)
        misses.append(f"x{base}")  # no label boundary: not under the pattern
        if pattern.startswith("*."):
            misses.append(base)  # *.example.com does not match example.com itself
    return patterns, names, misses


def _escape(name: str) -> str:
    return name.replace(".", "\\.")


def _regex(rng: random.Random, i: int) -> tuple[str, list[str], list[str]]:
    """The i-th regex (without '~'), names it matches, names it does not."""
    host, _ = _host(rng, REGEX_WORDS)
    h = _escape(host)
    digit = rng.randrange(100)
    if i < 120:  # the usual legacy form: unanchored, so ".site17.org" anywhere
        return (
            rf".*\.{h}",
            [f"www.{host}", f"a.b.{host}", f"x.{host}ish.com"],
            [host, f"www.x{host}"],
        )
    if i < 160:
        return rf".*\.{h}$", [f"www.{host}", f"a.b.{host}"], [host, f"www.{host}.evil.com"]
    if i < 167:
        return rf"(.*\.)?{h}$", [host, f"www.{host}"], [f"x{host}", f"{host}.evil.com"]
    if i < 174:
        return rf".*{h}$", [f"x{host}", f"www.{host}"], [f"{host}.evil.com"]
    if i < 176:
        return rf"www\.{h}", [f"www.{host}", f"www.{host}.evil.com"], [f"api.{host}"]
    if i < 180:
        return rf"^www\.{h}$", [f"www.{host}"], [f"www.{host}.evil.com", f"a.www.{host}"]
    kind = i % 5  # the genuinely complex ones, screened by one combined regex in the core
    if kind == 0:
        return (
            rf"^(www|api)\.{h}$",
            [f"www.{host}", f"api.{host}"],
            [f"m.{host}", f"www.{host}.evil.com"],
        )
    if kind == 1:
        return (
            rf"cdn[0-9]+\.{h}",
            [f"cdn{digit}.{host}", f"cdn{digit}.{host}.evil.com"],
            [f"cdn.{host}", f"x.cdn1.{host}"],
        )
    if kind == 2:
        return (
            rf"(img|static)[0-9]*\.{h}$",
            [f"img{digit}.{host}", f"static.{host}"],
            [f"video.{host}"],
        )
    if kind == 3:
        return rf"[a-z]+-edge\.{h}", [f"fra-edge.{host}"], [f"1-edge.{host}", f"edge.{host}"]
    return (
        rf".*\.(eu|us|asia)\.{h}$",
        [f"x.eu.{host}", f"a.b.asia.{host}"],
        [f"eu.{host}", f"x.uk.{host}"],
    )


def _regexes(rng: random.Random) -> tuple[list[str], list[str], list[str]]:
    patterns: list[str] = []
    names: list[str] = []
    misses: list[str] = []
    for i in range(REGEXES):
        source, good, bad = _regex(rng, i)
        compiled = re.compile(source, re.IGNORECASE)
        assert all(compiled.match(n) for n in good), (source, good)  # a generator bug
        assert not any(compiled.match(n) for n in bad), (source, bad)
        patterns.append(f"~{source}")
        names += good
        misses += bad
    rng.shuffle(patterns)
    return patterns, names, misses


def _is_private(net: IPNetwork) -> bool:
    return any(net.overlaps(p) for p in PRIVATE_NETS if p.version == net.version)


def _public_net(rng: random.Random, v6: bool, lengths: Callable[[], int]) -> IPNetwork:
    while True:
        net: IPNetwork
        if v6:
            address = (0b001 << 125) | rng.getrandbits(125)  # 2000::/3, global unicast
            net = ipaddress.IPv6Network((address, lengths()), strict=False)
        else:
            net = ipaddress.IPv4Network((rng.getrandbits(32), lengths()), strict=False)
        if not _is_private(net):
            return net


def _random_in(rng: random.Random, net: IPNetwork) -> IPAddress:
    address = int(net.network_address) + rng.getrandbits(net.max_prefixlen - net.prefixlen)
    return ipaddress.IPv4Address(address) if net.version == 4 else ipaddress.IPv6Address(address)


def _nets(rng: random.Random) -> list[IPNetwork]:
    nets: list[IPNetwork] = []
    for _ in range(NETS):
        r = rng.random()
        if nets and r < 0.03:  # the same block in a second rule
            nets.append(rng.choice(nets))
        elif nets and r < 0.08:  # a block inside an existing one, in another rule
            parent = rng.choice(nets)
            length = min(28 if parent.version == 4 else 64, parent.prefixlen + rng.randint(1, 8))
            address = _random_in(rng, parent)
            nets.append(ipaddress.ip_network((address, length), strict=False))
        elif r < 0.13:
            nets.append(_public_net(rng, True, lambda: rng.randint(29, 64)))
        else:
            nets.append(_public_net(rng, False, lambda: rng.choices(V4_LENGTHS, V4_WEIGHTS)[0]))
    return nets


def _geo_networks(rng: random.Random) -> list[tuple[IPNetwork, str]]:
    """Disjoint networks, each in one country, like a GeoIP country database."""
    found: list[tuple[IPNetwork, str]] = []
    while len(found) < GEO_NETWORKS:
        v6 = len(found) % 10 == 0
        lengths = (lambda: rng.randint(16, 32)) if v6 else (lambda: rng.randint(9, 16))
        net = _public_net(rng, v6, lengths)
        if not any(net.overlaps(other) for other, _ in found if other.version == net.version):
            found.append((net, rng.choice(GEO_COUNTRIES)))
    return found


def _batches(items: Sequence[T], size: Callable[[], int]) -> list[list[T]]:
    out: list[list[T]] = []
    i = 0
    while i < len(items):
        n = size()
        out.append(list(items[i : i + n]))
        i += n
    return out


def _domain_batch_size(rng: random.Random) -> int:
    r = rng.random()
    return 1 if r < 0.5 else rng.randint(2, 8) if r < 0.85 else rng.randint(9, 40)


def _net_batch_size(rng: random.Random) -> int:
    r = rng.random()
    return 1 if r < 0.4 else rng.randint(2, 20) if r < 0.8 else rng.randint(21, 100)


def generate(seed: int) -> Generated:
    rng = random.Random(seed)
    suffixes, suffix_names, suffix_misses = _suffix_patterns(rng)
    regexes, regex_names, regex_misses = _regexes(rng)
    nets = _nets(rng)
    geo = _geo_networks(rng)

    def new_rule() -> RuleSpec:
        return RuleSpec(rng.choice(list(EXITS)), rng.choice(WEIGHTS))

    rules: list[RuleSpec] = []
    for batch in _batches(suffixes, lambda: _domain_batch_size(rng)):
        rules.append(new_rule())
        rules[-1].domains += batch
    domain_rules = list(rules)
    for batch in _batches(regexes, lambda: rng.randint(1, 10)):
        # Legacy schemas mix regexes with plain domains in one rule about half the time.
        if rng.random() < 0.5:
            rule = rng.choice(domain_rules)
        else:
            rules.append(rule := new_rule())
        rule.domains += batch
    for net_batch in _batches(nets, lambda: _net_batch_size(rng)):
        if rng.random() < 0.1:
            rule = rng.choice(domain_rules)
        else:
            rules.append(rule := new_rule())
        rule.nets += net_batch
    rng.shuffle(rules)
    # Three countries in three rules; the US rule also lists GB, at the weight of the GB
    # rule, so that GB addresses match two rules alike and the one written first must win.
    gb_weight = rng.choice(WEIGHTS)
    for rule in (
        RuleSpec("uk", gb_weight, countries=["GB"]),
        RuleSpec("ru", rng.choice(WEIGHTS), countries=["RU"]),
        RuleSpec("us", gb_weight, countries=["US", "GB"]),
    ):
        rules.insert(rng.randrange(len(rules) + 1), rule)
    return Generated(
        _yaml(rules), rules, suffix_names, suffix_misses, regex_names, regex_misses, nets, geo
    )


def _yaml(rules: list[RuleSpec]) -> str:
    lines = ["version: 1", "exits:"]
    lines += [f"  {name}: {{interface: {interface}}}" for name, interface in EXITS.items()]
    lines += [f"default: {DEFAULT_EXIT}", "rules:"]
    for rule in rules:
        lines.append(f"  - exit: {rule.exit}")
        if rule.weight:
            lines.append(f"    weight: {rule.weight}")
        for key, values in (
            ("domains", rule.domains),
            ("nets", rule.nets),
            ("countries", rule.countries),
        ):
            if values:
                lines.append(f"    {key}:")
                lines += [f"      - '{value}'" for value in values]  # no quote in any value
    return "\n".join(lines) + "\n"


# -- GeoIP ----------------------------------------------------------------------------


class Geo:
    """An in-memory GeoIP country table; both the core and the linear scan use it."""

    def __init__(self, networks: Sequence[tuple[IPNetwork, str]]) -> None:
        self._map: PrefixMap[tuple[str, int]] = PrefixMap(
            ((net, (country, net.prefixlen)) for net, country in networks),
            lambda a, b: a[1] > b[1],
        )

    def lookup(self, ip: IPAddress) -> tuple[str, int] | None:
        return self._map.lookup(ip)


# -- queries --------------------------------------------------------------------------

Query = tuple[tuple[str, ...], list[IPAddress]]


def _ip(
    rng: random.Random,
    v4_nets: Sequence[IPNetwork],
    v6_nets: Sequence[IPNetwork],
    v4_geo: Sequence[IPNetwork],
    v6_geo: Sequence[IPNetwork],
) -> str:
    r = rng.random()
    if r < 0.01:  # private: never diverted, whatever the rules say
        net = rng.choice([n for n in PRIVATE_NETS if n.version == 4 and n.prefixlen <= 16])
        return str(_random_in(rng, net))
    if r < 0.11:
        s = rng.random()
        if s < 0.5:
            return str(_random_in(rng, rng.choice(v6_nets)))
        if s < 0.75:
            return str(_random_in(rng, rng.choice(v6_geo)))
        return str(_random_in(rng, _public_net(rng, True, lambda: 128)))
    s = rng.random()
    if s < 0.3:
        return str(_random_in(rng, rng.choice(v4_nets)))
    if s < 0.45:
        return str(_random_in(rng, rng.choice(v4_geo)))
    return str(_public_net(rng, False, lambda: 32).network_address)


def _name(rng: random.Random, gen: Generated) -> str:
    r = rng.random()
    if r < 0.30:
        name = rng.choice(gen.suffix_names)
    elif r < 0.35:
        name = rng.choice(gen.regex_names)
    elif r < 0.45:
        name = rng.choice(gen.suffix_misses if rng.random() < 0.7 else gen.regex_misses)
    else:
        name = f"host{rng.randrange(1000)}.random{rng.randrange(100_000)}.{rng.choice(TLDS)}"
    if rng.random() < 0.05:
        name = name.upper()
    return name + "." if rng.random() < 0.5 else name  # as DNS writes it, or not


def make_queries(gen: Generated, count: int, seed: int) -> list[tuple[tuple[str, ...], str]]:
    """(names, IP string) per answer: the query name, sometimes a CNAME, and one IP."""
    rng = random.Random(seed + 1)
    v4_nets = [n for n in gen.nets if n.version == 4]
    v6_nets = [n for n in gen.nets if n.version == 6]
    v4_geo = [n for n, _ in gen.geo if n.version == 4]
    v6_geo = [n for n, _ in gen.geo if n.version == 6]
    queries: list[tuple[tuple[str, ...], str]] = []
    for _ in range(count):
        names: tuple[str, ...] = (_name(rng, gen),)
        if rng.random() < 0.15:  # a CNAME chain: query name -> target
            names = (_name(rng, gen), *names)
        queries.append((names, _ip(rng, v4_nets, v6_nets, v4_geo, v6_geo)))
    return queries


def parse_queries(raw: list[tuple[tuple[str, ...], str]]) -> list[Query]:
    return [(names, [ipaddress.ip_address(ip)]) for names, ip in raw]


# -- the linear scan ------------------------------------------------------------------

Outcome = tuple[Reason, int | None]  # why, and the winning rule


@dataclass
class _LinearRule:
    weight: int
    exact: list[str]
    suffixes: list[tuple[str, bool]]  # ".example.com", and whether example.com matches too
    regexes: list[re.Pattern[str]]
    nets: list[IPNetwork]
    countries: list[str]


class LinearScan:
    """MRVPN2's way: per destination, try every pattern and net of every rule in order."""

    def __init__(self, schema: Schema, geo: Geo) -> None:
        self.geo = geo
        self.default = schema.default
        self.private = (*PRIVATE_NETS, *schema.mesh)
        self.rules: list[_LinearRule] = []
        for rule in schema.rules:
            linear = _LinearRule(rule.weight, [], [], [], list(rule.nets), list(rule.countries))
            for pattern in rule.domains:
                if pattern.kind is PatternKind.EXACT:
                    linear.exact.append(pattern.value)
                elif pattern.kind is PatternKind.REGEX:
                    linear.regexes.append(re.compile(pattern.value, re.IGNORECASE))
                else:
                    itself = pattern.kind is PatternKind.SUBTREE
                    linear.suffixes.append(("." + pattern.value, itself))
            self.rules.append(linear)

    @staticmethod
    def _domain_matches(rule: _LinearRule, names: list[str]) -> bool:
        for name in names:
            for value in rule.exact:
                if name == value:
                    return True
            for suffix, itself in rule.suffixes:
                if name.endswith(suffix) or (itself and name == suffix[1:]):
                    return True
            for regex in rule.regexes:
                if regex.match(name):
                    return True
        return False

    def decide(self, names: Sequence[str], ips: Sequence[IPAddress]) -> list[Outcome]:
        normalized = [normalize_name(name) for name in names]
        out: list[Outcome] = []
        for ip in ips:
            if any(ip in net for net in self.private):
                out.append((Reason.PRIVATE, None))
                continue
            geo = self.geo.lookup(ip)
            best: tuple[int, int, int] | None = None
            for i, rule in enumerate(self.rules):
                specificity = -1
                if self._domain_matches(rule, normalized):
                    specificity = ip.max_prefixlen  # a DNS-learned IP is a host route
                for net in rule.nets:
                    if ip in net and net.prefixlen > specificity:
                        specificity = net.prefixlen
                if geo is not None and geo[0] in rule.countries and geo[1] > specificity:
                    specificity = geo[1]
                if specificity >= 0:
                    key = (rule.weight, specificity, -i)
                    if best is None or key > best:
                        best = key
            if best is not None:
                out.append((Reason.RULE, -best[2]))
            else:
                out.append((Reason.DEFAULT if self.default else Reason.MAIN, None))
        return out


# -- measuring ------------------------------------------------------------------------


def _timed(run: Callable[[], object]) -> float:
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()


def time_core(policy: Policy, queries: list[Query], repeat: int) -> float:
    """Best wall time of ``repeat`` runs of every query through ``Policy.decide``."""
    decide = policy.decide

    def run() -> None:
        for names, ips in queries:
            decide(names, ips)

    return min(_timed(run) for _ in range(repeat))


def _outcome(decision: Decision) -> Outcome:
    return decision.reason, decision.rule


def _goal(met: bool) -> str:
    return "met" if met else "NOT met"


def _report_disagreement(policy: Policy, query: Query, core: Decision, linear: Outcome) -> None:
    names, ips = query
    print(f"  DISAGREE names={list(names)} ip={ips[0]}")
    print(f"    core:   {core.reason.value} rule={core.rule} kind={core.kind}")
    print(f"    linear: {linear[0].value} rule={linear[1]}")
    for c in policy.candidates(names, ips[0])[:4]:
        print(
            f"    candidate rule={c.rule} {c.kind.value} w={c.weight} spec={c.specificity} "
            f"{c.detail}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument(
        "--queries",
        type=int,
        default=100_000,
        help="decisions timed through the core (default 100000)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=2_000,
        help="first queries also run through the linear scan (default 2000)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="core runs; best kept (default 3)")
    args = parser.parse_args(argv)
    sample_size = min(args.sample, args.queries)

    gen = generate(args.seed)
    geo = Geo(gen.geo)
    queries = parse_queries(make_queries(gen, args.queries, args.seed))

    start = time.perf_counter()
    loaded = parse_schema(gen.text, "<bench>")
    parsed = time.perf_counter()
    policy = Policy(loaded.schema, geo)
    compiled = time.perf_counter()
    load_s, compile_s = parsed - start, compiled - parsed
    schema = loaded.schema

    kinds = Counter(p.kind for rule in schema.rules for p in rule.domains)
    nets = [net for rule in schema.rules for net in rule.nets]
    countries = [", ".join(rule.countries) for rule in schema.rules if rule.countries]
    print(
        f"schema (seed {args.seed}): {len(schema.rules):,} rules, "
        f"{len(gen.text.splitlines()):,} lines of YAML"
    )
    print(
        f"  suffix patterns {kinds[PatternKind.SUBTREE] + kinds[PatternKind.BELOW]:,} "
        f"(subtree {kinds[PatternKind.SUBTREE]:,}, *. {kinds[PatternKind.BELOW]:,}), "
        f"regexes {kinds[PatternKind.REGEX]:,}, "
        f"nets {len(nets):,} (IPv6 {sum(n.version == 6 for n in nets):,}), "
        f"country rules {len(countries)} ({'; '.join(countries)})"
    )
    print(f"  GeoIP table: {len(gen.geo)} networks in {len(GEO_COUNTRIES)} countries")
    cnames = sum(len(names) > 1 for names, _ in queries)
    v6 = sum(ips[0].version == 6 for _, ips in queries)
    print(f"queries: {len(queries):,} answers of one IP; with a CNAME {cnames:,}, IPv6 {v6:,}")

    outcomes = Counter(
        d.kind.value if d.kind else d.reason.value
        for names, ips in queries
        for d in policy.decide(names, ips)
    )
    print("  core outcomes: " + ", ".join(f"{k} {v:,}" for k, v in outcomes.most_common()))

    print()
    total = load_s + compile_s
    print(f"load (parse_schema)   {load_s:8.3f} s")
    print(f"compile (Policy)      {compile_s:8.3f} s")
    print(
        f"load + compile        {total:8.3f} s   goal < {GOAL_LOAD:g} s: {_goal(total < GOAL_LOAD)}"
    )

    core_s = time_core(policy, queries, args.repeat)
    core_rate = len(queries) / core_s
    print(
        f"core                  {core_rate:12,.0f} decisions/s ({len(queries):,} in "
        f"{core_s:.3f} s, best of {args.repeat})   goal >= {GOAL_RATE:,.0f}/s: "
        f"{_goal(core_rate >= GOAL_RATE)}"
    )

    sample = queries[:sample_size]
    linear = LinearScan(schema, geo)
    linear_out: list[Outcome] = []

    def run_linear() -> None:
        for names, ips in sample:
            linear_out.extend(linear.decide(names, ips))

    linear_s = _timed(run_linear)
    linear_rate = len(sample) / linear_s
    sample_core_rate = len(sample) / time_core(policy, sample, args.repeat)
    ratio = core_rate / linear_rate
    print(
        f"linear scan           {linear_rate:12,.1f} decisions/s ({len(sample):,} in "
        f"{linear_s:.3f} s)"
    )
    print(f"core on that sample   {sample_core_rate:12,.0f} decisions/s")
    print(
        f"ratio core / linear   {ratio:12,.1f}x   goal >= {GOAL_RATIO:g}x: "
        f"{_goal(ratio >= GOAL_RATIO)}"
    )

    disagreements = 0
    for query, expected in zip(sample, linear_out, strict=True):
        got = policy.decide(*query)[0]
        if _outcome(got) != expected:
            disagreements += 1
            if disagreements <= 10:
                _report_disagreement(policy, query, got, expected)
    print()
    print(f"check on the sample: {len(sample) - disagreements:,} agree, {disagreements:,} disagree")
    print()
    wrong = large_lists(gen, geo, policy, queries, core_rate, args)
    return 1 if disagreements or wrong else 0


# -- large lists ------------------------------------------------------------------------


def _list_files(directory: Path, seed: int) -> tuple[list[str], list[IPNetwork]]:
    """domains.txt (plain), dnsmasq.conf and cidrs.txt in ``directory``, shaped like real
    lists (a comment header, a few malformed lines); the names and networks written."""
    rng = random.Random(seed + 7)
    tlds = ("com", "net", "org", "ru", "io", "info", "co.uk", "xyz")
    names = list(
        dict.fromkeys(
            f"{rng.choice(SUFFIX_WORDS)}{rng.randrange(10**6)}-{rng.choice(SUFFIX_WORDS)}.{rng.choice(tlds)}"
            for _ in range(LIST_DOMAINS + LIST_DOMAINS // 20)
        )
    )[:LIST_DOMAINS]
    plain, dnsmasq = names[: LIST_DOMAINS * 4 // 5], names[LIST_DOMAINS * 4 // 5 :]
    nets: dict[IPNetwork, None] = {}
    v4_length, v6_length = (lambda: rng.randint(16, 30)), (lambda: rng.randint(40, 64))
    while len(nets) < LIST_NETS:
        v6 = rng.random() < 0.1
        nets[_public_net(rng, v6, v6_length if v6 else v4_length)] = None
    header = "# generated by bench/policy.py, shaped like a public list\n"
    (directory / "domains.txt").write_text(
        header + "\n".join(plain) + "\nnot a domain!\n", encoding="utf-8"
    )
    (directory / "dnsmasq.conf").write_text(
        header + "".join(f"server=/{name}/127.0.0.1#5353\n" for name in dnsmasq),
        encoding="utf-8",
    )
    (directory / "cidrs.txt").write_text(
        header + "\n".join(map(str, nets)) + "\n300.1.2.3/24\n", encoding="utf-8"
    )
    return names, list(nets)


def _rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+)", status)
    assert found is not None
    return int(found[1]) / 1024


def large_lists(
    gen: Generated,
    geo: Geo,
    small: Policy,
    queries: list[Query],
    small_rate: float,
    args: argparse.Namespace,
) -> int:
    """The generated schema plus two rules of lists: load and compile times, RSS growth,
    and decisions/s against the small schema's; the number of list entries decided wrong."""
    from iptserver.dataplane.plan import plan as kernel_plan
    from iptserver.lists.store import ListReader, load_with_lists

    with tempfile.TemporaryDirectory(prefix="iptserver-bench-") as tmp:
        directory = Path(tmp)
        names, nets = _list_files(directory, args.seed)
        schema_path = directory / "schema.yaml"
        schema_path.write_text(
            gen.text
            + "  - exit: uk\n    lists:\n      - file: domains.txt\n"
            + "      - {file: dnsmasq.conf, format: dnsmasq}\n"
            + "  - exit: ru\n    lists: [{file: cidrs.txt, format: cidrs}]\n",
            encoding="utf-8",
        )
        gc.collect()
        rss_before = _rss_mb()
        start = time.perf_counter()
        loaded = load_with_lists(schema_path, ListReader(None, quiet=True))
        read = time.perf_counter()
        policy = Policy(loaded.schema, geo)
        compiled = time.perf_counter()
        planned = kernel_plan(loaded.schema, {})
        done = time.perf_counter()
        gc.collect()
        rss_growth = _rss_mb() - rss_before
    lists = loaded.lists.values()
    skipped = sum(len(r.parsed.problems) for r in lists if r.parsed is not None)
    static = sum(len(s.entries) for c in planned.classes for s in c.static)
    total = done - start
    print(
        f"large lists: {len(names):,} domains (plain {LIST_DOMAINS * 4 // 5:,}, dnsmasq "
        f"{LIST_DOMAINS // 5:,}) and {len(nets):,} networks (cidrs) in 3 files, "
        f"{skipped} malformed lines skipped"
    )
    print(f"  read lists + schema {read - start:8.3f} s")
    print(f"  compile (Policy)    {compiled - read:8.3f} s")
    print(f"  kernel plan         {done - compiled:8.3f} s ({static:,} static set entries)")
    print(
        f"  total               {total:8.3f} s   goal < {GOAL_LIST_COMPILE:g} s: "
        f"{_goal(total < GOAL_LIST_COMPILE)}"
    )
    print(
        f"  RSS growth          {rss_growth:8.1f} MB  goal < {GOAL_LIST_RSS:g} MB: "
        f"{_goal(rss_growth < GOAL_LIST_RSS)}"
    )
    rate = len(queries) / time_core(policy, queries, args.repeat)
    print(
        f"  core, same queries  {rate:12,.0f} decisions/s = {rate / small_rate:.2f}x the small "
        f"schema's   goal >= {GOAL_LIST_RATE:g}x: {_goal(rate >= GOAL_LIST_RATE * small_rate)}"
    )
    rng = random.Random(args.seed + 9)
    hits: list[Query] = [
        ((f"www.{rng.choice(names)}",), [_random_in(rng, rng.choice(nets))])
        for _ in range(len(queries) // 4)
    ]
    hit_rate = len(hits) / time_core(policy, hits, args.repeat)
    print(f"  core, list hits     {hit_rate:12,.0f} decisions/s (a listed name, a listed net)")
    # Where no rule of the small schema matches, the list's rule must decide.
    uk, ru = len(gen.rules), len(gen.rules) + 1
    checked = wrong = 0
    for names_, ips in hits[:5000]:
        if small.decide_name(names_).rule is None:
            checked += 1
            wrong += policy.decide_name(names_).rule != uk
        if small.decide_ip(ips[0]).rule is None:
            checked += 1
            wrong += policy.decide_ip(ips[0]).rule != ru
    print(
        f"  check: {checked - wrong:,} of {checked:,} listed names and addresses that no other "
        "rule matches decided by their list"
    )
    return wrong


if __name__ == "__main__":
    sys.exit(main())
