"""Client queries: what the proxy accepts, and the replies it makes itself.

Pure functions. A query the proxy cannot forward raises :class:`BadQuery`, which says
what was wrong (for the log) and whether to answer it (FORMERR, NOTIMP) or drop it
(no readable header, or a response where a query belongs: answering those would let
two servers bounce packets at each other).
"""

from __future__ import annotations

import struct

from dnslib import OPCODE, RCODE

from iptserver.dns.wire import (
    HEADER_LEN,
    OPCODE_QUERY,
    TYPE_OPT,
    Flag,
    Header,
    Message,
    Section,
    WireError,
    parse_header,
    parse_message,
)

# Browsers ask this before turning on DNS-over-HTTPS by themselves; NXDOMAIN tells them
# the network wants its resolver used (which is how iptserver sees their names).
DOH_CANARY = "use-application-dns.net"

EDNS_PAYLOAD = 1232  # the UDP size our own replies advertise (DNS flag day 2020)
_OPCODE_SHIFT = 11


class BadQuery(Exception):
    """A client packet the proxy will not forward."""

    def __init__(
        self,
        reason: str,
        rcode: int | None,
        header: Header | None,
        message: Message | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rcode = rcode  # None: drop without a reply
        self.header = header
        self.message = message  # when the packet could be read, for echoing its question


def read_query(wire: bytes) -> Message:
    """The query in ``wire``, or :class:`BadQuery` saying why it is not one to forward."""
    try:
        header = parse_header(wire)
    except WireError as e:
        raise BadQuery(str(e), None, None) from None
    if header.is_response:
        raise BadQuery("it is a response, not a query", None, header)
    try:
        message = parse_message(wire)
    except WireError as e:
        raise BadQuery(str(e), RCODE.FORMERR, header) from None
    if header.opcode != OPCODE_QUERY:
        opcode = OPCODE.get(header.opcode, header.opcode)
        raise BadQuery(f"opcode {opcode} is not supported", RCODE.NOTIMP, header, message)
    if header.qdcount != 1:
        raise BadQuery(
            f"{header.qdcount} questions (a query has one)", RCODE.FORMERR, header, message
        )
    opts = [r for r in message.section(Section.ADDITIONAL) if r.rtype == TYPE_OPT]
    if len(opts) > 1 or (opts and opts[0].name):
        raise BadQuery(
            "malformed EDNS: more than one OPT record, or one not owned by the root",
            RCODE.FORMERR,
            header,
            message,
        )
    return message


def own_reply(wire: bytes, rcode: int, header: Header, message: Message | None = None) -> bytes:
    """A reply made by the proxy: the query's ID, opcode, RD and CD, its question (when
    it could be read), and an OPT record when the query had one (RFC 6891 §7)."""
    flags = (
        Flag.QR
        | (header.opcode << _OPCODE_SHIFT)
        | (header.flags & (Flag.RD | Flag.CD))
        | Flag.RA
        | (rcode & 0xF)
    )
    questions = b"" if message is None else wire[HEADER_LEN : message.question_end]
    qdcount = 0 if message is None else len(message.questions)
    with_opt = message is not None and message.opt is not None
    out = struct.pack("!HHHHHH", header.id, flags, qdcount, 0, 0, int(with_opt)) + questions
    if with_opt:
        out += b"\x00" + struct.pack("!HHIH", TYPE_OPT, EDNS_PAYLOAD, 0, 0)
    return out
