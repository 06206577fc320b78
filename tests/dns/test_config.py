"""The proxy's settings: endpoints as the CLI writes them, and what a config refuses."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest

from iptserver.dns import DnsProxyConfig, Endpoint

V4 = ipaddress.ip_address("127.0.0.1")
V6 = ipaddress.ip_address("::1")


@pytest.mark.parametrize(
    ("text", "endpoint", "shown"),
    [
        ("127.0.0.1", Endpoint(V4, 53), "127.0.0.1:53"),
        ("127.0.0.1:5353", Endpoint(V4, 5353), "127.0.0.1:5353"),
        ("::1", Endpoint(V6, 53), "[::1]:53"),
        ("[::1]:5300", Endpoint(V6, 5300), "[::1]:5300"),
        ("[::1]", Endpoint(V6, 53), "[::1]:53"),
    ],
)
def test_endpoint_parse(text: str, endpoint: Endpoint, shown: str) -> None:
    assert Endpoint.parse(text) == endpoint
    assert str(endpoint) == shown


@pytest.mark.parametrize(
    "text", ["localhost:53", "127.0.0.1:x", "127.0.0.1:70000", "[::1", "[::1]x", "1.2.3:53"]
)
def test_endpoint_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        Endpoint.parse(text)


UP = (Endpoint(V4, 53),)


def test_plain_tuples_become_endpoints() -> None:
    config = DnsProxyConfig(listen=[(V4, 0)], upstream=[(V6, 53)])  # type: ignore[arg-type]
    assert config.listen == (Endpoint(V4, 0),)
    assert config.upstream == (Endpoint(V6, 53),)


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"upstream": ()}, "upstream must list"),
        ({"listen": ()}, "listen must list"),
        ({"upstream": ((V4, 0),)}, "port 0 must be 1 to 65535"),
        ({"listen": (("127.0.0.1", 53),)}, "not an IPv4Address"),
        ({"listen": ((V4,),)}, "not an .address, port. pair"),
        ({"timeout": 0}, "timeout must be"),
        ({"sink_timeout": -1.0}, "sink_timeout must be"),
        ({"max_tcp_clients": 0}, "max_tcp_clients must be"),
        ({"fail_open_ttl": -1}, "fail_open_ttl must be"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(v),
)
def test_config_rejects(settings: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        DnsProxyConfig(**{"listen": UP, "upstream": UP, **settings})
