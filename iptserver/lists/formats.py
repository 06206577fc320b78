"""Parse a list in any supported format: the one entry point a caller needs.

``parse_list(name, data, format, include=...)`` reads text or bytes that the caller has
already fetched (a file, a download, the last good copy); it does no I/O of its own
except through ``include``, the callable that returns the text of a v2fly
``include:NAME``. Malformed lines come back as problems, never as exceptions.

``format: auto`` (:func:`detect_format`) decides, in this order:

1. the name's extension (of a URL, its path): ``.json`` and ``.srs`` are sing-box;
2. text that starts with ``{`` is sing-box;
3. of the first 200 lines that are not blank or comments: when at least half are
   dnsmasq ``server=/``, ``local=/``, ``address=/``, ``ipset=/`` or ``nftset=/`` lines,
   dnsmasq; when any has a v2fly rule type (``domain:``, ``full:``, ``keyword:``,
   ``regexp:``, ``include:``) or an ``@attribute``, v2fly; when all are networks or
   addresses, cidrs;
4. otherwise domains (which also takes hosts-file lines and networks).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from iptserver.lists import patterns
from iptserver.lists.dnsmasq import parse_dnsmasq
from iptserver.lists.model import ListFormat, ListProblem, ParsedList, decode_text, split_lines
from iptserver.lists.plain import parse_cidrs, parse_domains
from iptserver.lists.singbox import parse_singbox
from iptserver.lists.v2fly import IncludeReader, parse_v2fly

SNIFF_LINES = 200
_EXTENSIONS = {".json": ListFormat.SING_BOX, ".srs": ListFormat.SING_BOX}
_DNSMASQ_LINE = re.compile(r"(?:--)?(?:server|local|address|ipset|nftset)=/")
_V2FLY_LINE = re.compile(r"(?:domain|full|keyword|regexp|include):|.*\s@-?[a-z0-9!]+(?:\s|$)")


def detect_format(name: str, text: str) -> ListFormat:
    """The format of a list named ``name`` (a path or URL) holding ``text``: see the
    module docstring. Never returns ``AUTO``."""
    path = urlsplit(name).path if "://" in name else name
    by_name = _EXTENSIONS.get(PurePosixPath(path).suffix.lower())
    if by_name is not None:
        return by_name
    if text.lstrip().startswith("{") or text.startswith("SRS"):
        return ListFormat.SING_BOX
    sample = _sample(text)
    if sample and 2 * sum(1 for line in sample if _DNSMASQ_LINE.match(line)) >= len(sample):
        return ListFormat.DNSMASQ
    if any(_V2FLY_LINE.match(line) for line in sample):
        return ListFormat.V2FLY
    if sample and all(_is_network(line) for line in sample):
        return ListFormat.CIDRS
    return ListFormat.DOMAINS


def _sample(text: str) -> list[str]:
    sample: list[str] = []
    for raw in split_lines(text):
        line = raw.strip()
        if line and line[0] not in "#!":
            sample.append(line)
            if len(sample) == SNIFF_LINES:
                break
    return sample


def _is_network(line: str) -> bool:
    token = line.partition("#")[0].strip()
    if not patterns.looks_like_address(token):
        return False
    try:
        ipaddress.ip_network(token, strict=False)
    except ValueError:
        return False
    return True


def parse_list(
    name: str,
    data: str | bytes,
    list_format: ListFormat = ListFormat.AUTO,
    include: IncludeReader | None = None,
) -> ParsedList:
    """The entries of one list. ``name`` is how problems and ``explain`` cite it (a path
    or URL); ``include`` is used only by v2fly lists."""
    text, bad_line = decode_text(data)
    if list_format is ListFormat.AUTO:
        list_format = detect_format(name, text)
    if list_format is ListFormat.DOMAINS:
        parsed = parse_domains(name, text)
    elif list_format is ListFormat.CIDRS:
        parsed = parse_cidrs(name, text)
    elif list_format is ListFormat.DNSMASQ:
        parsed = parse_dnsmasq(name, text)
    elif list_format is ListFormat.V2FLY:
        parsed = parse_v2fly(name, text, include)
    else:
        parsed = parse_singbox(name, text)
    if bad_line is None or (list_format is ListFormat.SING_BOX and text.startswith("SRS")):
        return parsed  # a binary rule-set is never UTF-8: its own problem says enough
    problem = ListProblem(name, bad_line, "bytes that are not UTF-8, read as U+FFFD")
    return dataclasses.replace(parsed, problems=(problem, *parsed.problems))
