"""The health part of the schema: how an exit is watched and what happens when it is down.

Per exit, ``health`` says how to tell that it works (TCP connects that go *through* the
exit to the far side, and the age of its WireGuard handshake) and ``on_down`` what its
traffic does meanwhile: ``block`` (dropped, never sent out of the host's own default
route) or an ordered list of other exits to fail over to. Checks that need the other
exits (the names are defined, not the exit itself) live in ``iptserver.schema.load``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictInt,
    WithJsonSchema,
    model_validator,
)

from iptserver.schema.values import IPAddress, format_endpoint, parse_endpoint

BLOCK = "block"
"""``on_down: block``: while the exit is down its traffic is dropped."""


def parse_probe_target(raw: Any) -> tuple[IPAddress, int]:
    """``ADDR:PORT``, or ``[IPv6ADDR]:PORT``.

    The probe leaves by SO_BINDTODEVICE on the exit's interface, which IPv4 routes on-link
    when no table has a route out of it; an IPv6 probe gets a route of its own per exit
    (``iptserver.dataplane.probe6``), and its source is the tunnel's IPv6 address."""
    return parse_endpoint(raw)


ProbeTarget = Annotated[
    tuple[IPAddress, int],
    PlainValidator(parse_probe_target),
    PlainSerializer(format_endpoint),
    WithJsonSchema(
        {
            "type": "string",
            "description": "ADDR:PORT or [IPv6ADDR]:PORT reached with TCP through the exit",
        }
    ),
]


def parse_on_down(raw: Any) -> str | tuple[str, ...]:
    if raw == BLOCK:
        return BLOCK
    if isinstance(raw, list) and raw and all(isinstance(name, str) for name in raw):
        return tuple(raw)
    raise ValueError(
        f"must be 'block' or a list of exit names to fail over to, in order (got {raw!r})"
    )


OnDown = Annotated[
    str | tuple[str, ...],
    PlainValidator(parse_on_down),
    PlainSerializer(lambda v: v if isinstance(v, str) else list(v)),
    WithJsonSchema(
        {
            "description": "What the exit's traffic does while the exit is down: 'block' "
            "(dropped), or the exits to fail over to, in order (the first that is up takes "
            "it; none up: blocked)",
            "anyOf": [
                {"const": BLOCK},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
            ],
        }
    ),
]


def parse_webhook(raw: Any) -> str | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, str)
        or not raw.startswith(("http://", "https://"))
        or len(raw.split("://", 1)[1]) == 0
        or any(c.isspace() for c in raw)
    ):
        raise ValueError(f"{raw!r} is not an http:// or https:// URL")
    return raw


Webhook = Annotated[
    str | None,
    PlainValidator(parse_webhook),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": "^https?://\\S+$"}, {"type": "null"}],
            "description": "URL that exit state changes are POSTed to as JSON",
        }
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Health(_Model):
    """How an exit is watched. An exit without ``health`` is never considered down."""

    probe: list[ProbeTarget] = Field(
        default_factory=list,
        description="TCP targets connected to THROUGH the exit, every interval; a round is "
        "good when one of them answers",
    )
    interval: Annotated[float, Field(gt=0, le=3600)] = Field(
        1.0, description="Seconds between probe rounds"
    )
    timeout: Annotated[float, Field(gt=0, le=30)] = Field(
        # Half the interval: with fall 2 an exit killed at any moment is failed over
        # within 2.5 s (the goal is 3 s); a TCP connect through a tunnel takes one RTT.
        0.5,
        description="Seconds a probe may take",
    )
    fall: Annotated[StrictInt, Field(ge=1, le=1000)] = Field(
        2, description="Consecutive failed rounds that make the exit down"
    )
    rise: Annotated[StrictInt, Field(ge=1, le=1000)] = Field(
        3, description="Consecutive good rounds that make it up again"
    )
    handshake_max: Annotated[StrictInt, Field(ge=0, le=7 * 24 * 3600)] = Field(
        180,
        description="Seconds: a WireGuard latest handshake older than this fails the round "
        "(0: not checked)",
    )

    @model_validator(mode="after")
    def _watches_something(self) -> Health:
        if not self.probe and self.handshake_max == 0:
            raise ValueError("health watches nothing: give probe targets or a handshake_max")
        return self


class HealthSettings(_Model):
    webhook: Webhook = None
