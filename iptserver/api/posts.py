"""The two endpoints that change something, behind the token: ``POST /v1/answers`` (an
answer the recursor resolved, to route) and ``POST /v1/reload``."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from iptserver.api import answers
from iptserver.api.answers import AnswerRequest, BadRequest
from iptserver.api.config import CONFIG
from iptserver.api.http import authorize, error, json_body
from iptserver.errors import DataplaneError

log = logging.getLogger(__name__)

ANSWER_FIELDS = ("qname", "chain", "addresses", "ttl", "client")


async def post_answer(request: web.Request) -> web.Response:
    """An answer the recursor resolved: route it, and say the TTL clients may keep it."""
    authorize(request)
    answer = parse_answer(await json_body(request))
    try:
        learner = request.app[CONFIG].learner
        cap = await learner.learn(answer.names, answer.addresses, answer.ttl, answer.client)
    except DataplaneError as e:
        log.error("answer for %s not routed: %s", answer.names[0], e)
        return error(503, f"the kernel refused the routes: {e}")
    return web.json_response({"ttl": cap})


async def post_reload(request: web.Request) -> web.Response:
    """The same reload as SIGHUP; a bad schema is rejected and the running one stays."""
    authorize(request)
    config = request.app[CONFIG]
    if config.reload is None:
        return error(503, "reload is not available here")
    reloaded = await config.reload()
    return web.json_response({"reloaded": reloaded})


def parse_answer(body: Any) -> AnswerRequest:
    """``{"qname", "chain"?, "addresses", "ttl", "client"?}``, checked field by field;
    raises BadRequest naming the field."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - set(ANSWER_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    for key in ("qname", "addresses", "ttl"):
        if key not in body:
            raise BadRequest(f"{key} is required")
    qname = answers.check_name(body["qname"], "qname")
    chain = body.get("chain", [])
    if not isinstance(chain, list):
        raise BadRequest("chain must be a list of names")
    answers.check_chain_length(len(chain))
    names = (qname, *(answers.check_name(n, f"chain[{i}]") for i, n in enumerate(chain)))
    raw_addresses = body["addresses"]
    if not isinstance(raw_addresses, list):
        raise BadRequest("addresses must be a list of IP addresses")
    answers.check_address_count(len(raw_addresses))
    addresses = tuple(
        answers.check_address(a, f"addresses[{i}]") for i, a in enumerate(raw_addresses)
    )
    client = body.get("client")
    if client is not None:
        client = str(answers.check_address(client, "client"))
    return AnswerRequest(names, addresses, answers.check_ttl(body["ttl"]), client=client)
