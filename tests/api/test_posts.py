"""``POST /v1/answers`` and ``POST /v1/reload`` (``iptserver/api/posts.py``) over real
HTTP, in front of a real Learner and Policy."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.api.harness import ANSWER, AUTH, Harness, error_of, serve


def test_answer_is_routed_and_its_ttl_capped() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        response = await client.post("/v1/answers", json=ANSWER, headers=AUTH)
        assert response.status == 200
        assert await response.json() == {"ttl": 120}  # the rule's hold
        short = {**ANSWER, "ttl": 30, "chain": []}
        assert await (await client.post("/v1/answers", json=short, headers=AUTH)).json() == {
            "ttl": 30
        }
        unmatched = {"qname": "Other.ORG.", "addresses": ["192.0.2.1"], "ttl": 9000}
        response = await client.post("/v1/answers", json=unmatched, headers=AUTH)
        assert await response.json() == {"ttl": 300}  # the schema's hold

    h = serve(scenario)
    learned = {(str(e.network), e.mark, e.timeout) for e in h.kernel.applied}
    assert learned == {("198.51.100.10/32", 256, 122), ("2001:db8::1/128", 256, 122)}
    assert h.learner.recent[-1][0] == ("other.org",)
    assert h.learner.recent[0][0] == ("www.example.com", "cdn.example.net")


def test_answer_kernel_failure_is_503() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        h.kernel.fail = True
        response = await client.post("/v1/answers", json=ANSWER, headers=AUTH)
        assert "test failure" in await error_of(response, 503)
        h.kernel.fail = False
        assert (await client.post("/v1/answers", json=ANSWER, headers=AUTH)).status == 200

    serve(scenario)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([], "JSON object"),
        ("www.example.com", "JSON object"),
        (0, "JSON object"),
        ({**ANSWER, "extra": 1}, "unknown field"),
        ({"addresses": [], "ttl": 1}, "qname is required"),
        ({"qname": "a.com", "ttl": 1}, "addresses is required"),
        ({"qname": "a.com", "addresses": []}, "ttl is required"),
        ({**ANSWER, "qname": 5}, "qname must be a string"),
        ({**ANSWER, "qname": ""}, "not a DNS name"),
        ({**ANSWER, "qname": "."}, "not a DNS name"),
        ({**ANSWER, "qname": "a b.com"}, "not a DNS name"),
        ({**ANSWER, "qname": "a" * 300}, "not a DNS name"),
        ({**ANSWER, "chain": "cdn.example.net"}, "chain must be a list"),
        ({**ANSWER, "chain": [None]}, "chain[0] must be a string"),
        ({**ANSWER, "chain": ["x.net"] * 100}, "chain has more"),
        ({**ANSWER, "addresses": "198.51.100.10"}, "addresses must be a list"),
        ({**ANSWER, "addresses": {"ip": "198.51.100.10"}}, "addresses must be a list"),
        ({**ANSWER, "addresses": [3325256714]}, "addresses[0] must be a string"),
        ({**ANSWER, "addresses": ["198.51.100.10", "300.1.1.1"]}, "addresses[1] is not an IP"),
        ({**ANSWER, "addresses": ["198.51.100.0/24"]}, "not an IP"),
        ({**ANSWER, "addresses": [""]}, "not an IP"),
        ({**ANSWER, "addresses": ["192.0.2.1"] * 1000}, "more than"),
        ({**ANSWER, "ttl": -1}, "ttl must be"),
        ({**ANSWER, "ttl": 2**31}, "ttl must be"),
        ({**ANSWER, "ttl": 1.5}, "ttl must be"),
        ({**ANSWER, "ttl": "300"}, "ttl must be"),
        ({**ANSWER, "ttl": True}, "ttl must be"),
        ({**ANSWER, "ttl": None}, "ttl must be"),
    ],
)
def test_answer_bad_bodies_are_400(body: Any, expected: str) -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        response = await client.post("/v1/answers", json=body, headers=AUTH)
        assert expected in await error_of(response, 400)

    h = serve(scenario)
    assert h.learner.answers == 0 and h.kernel.applied == []


# POST /v1/reload


def test_reload() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        response = await client.post("/v1/reload", headers=AUTH)
        assert response.status == 200
        assert await response.json() == {"reloaded": True}
        h.reload_results = [False]
        assert await (await client.post("/v1/reload", headers=AUTH)).json() == {"reloaded": False}

    h = serve(scenario)
    assert h.reload_calls == 2
    assert h.reloads == {"ok": 1, "rejected": 1}


def test_reload_unavailable_is_503() -> None:
    async def scenario(client: TestClient[Any, Any], h: Harness) -> None:
        await error_of(await client.post("/v1/reload"), 503)

    serve(scenario, token=None, reload=False)
