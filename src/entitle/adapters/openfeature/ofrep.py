"""OFREP over HTTP (https://github.com/open-feature/protocol, service/openapi.yaml):
``POST /ofrep/v1/evaluate/flags/{key}`` and the bulk ``POST /ofrep/v1/evaluate/flags``
(ETag, ``If-None-Match`` -> 304), with the specification's error shapes and status codes.

Who asks decides the tenant: the bearer token is reviewed (cached, adapters/kube/token_review)
and the tenant is the one of the token's namespace. Nothing in the body -- the evaluation
context included -- can select another. No or bad token: 401; a caller without a namespace
or a namespace without a tenant: 403. Answers come from the in-memory state (a callback).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from entitle.adapters.kube.token_review import TokenReviewer, TokenReviewUnavailable
from entitle.domain.flags import Flag, FlagNotFound

log = logging.getLogger("entitle.ofrep")

# (tenant) -> an evaluator: key -> Flag (raising FlagNotFound), and None -> every flag.
Flags = Callable[[str], Any]


class Refused(Exception):
    """The request is answered with this status (and body) before any evaluation."""

    def __init__(self, status: int, body: dict | None = None) -> None:
        super().__init__(status)
        self.status, self.body = status, body


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


class OfrepApp:
    def __init__(self, reviewer: TokenReviewer, tenant_of: Callable[[str], str | None], flags: Flags,
                 on_evaluated: Callable[[str, list[Flag]], None] | None = None, max_body: int = 64 * 1024,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self.reviewer, self.tenant_of, self.flags, self.ready = reviewer, tenant_of, flags, ready
        self.on_evaluated = on_evaluated
        self.app = web.Application(client_max_size=max_body)
        self.app.router.add_post("/ofrep/v1/evaluate/flags/{key}", self.evaluate_one)
        self.app.router.add_post("/ofrep/v1/evaluate/flags", self.evaluate_bulk)

    async def _tenant(self, request: web.Request) -> str:
        if not self.ready():
            # A replica still priming its state would answer from a partial picture.
            raise Refused(500, {"errorDetails": "entitle is starting (state not primed yet); retry"})
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401)
        try:
            caller = await self.reviewer.caller(token.strip())
        except TokenReviewUnavailable as exc:
            log.warning("token review failed: %s", exc)
            raise Refused(500, {"errorDetails": "the token could not be reviewed; retry"}) from None
        if not caller.authenticated:
            raise Refused(401)
        tenant = self.tenant_of(caller.namespace) if caller.namespace else None
        if tenant is None:
            raise Refused(403)
        return tenant

    @staticmethod
    async def _context(request: web.Request, key: str | None) -> dict:
        raw = await request.read()
        if not raw.strip():
            return {}
        where = {"key": key} if key is not None else {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Refused(400, {**where, "errorCode": "PARSE_ERROR", "errorDetails": f"not JSON: {exc}"[:300]}) from None
        if not isinstance(body, dict):
            raise Refused(400, {**where, "errorCode": "PARSE_ERROR", "errorDetails": "the body must be a JSON object"})
        context = body.get("context", {})
        if context is None:
            return {}
        if not isinstance(context, dict):
            raise Refused(400, {**where, "errorCode": "INVALID_CONTEXT", "errorDetails": "context must be an object"})
        return context

    async def evaluate_one(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        try:
            tenant = await self._tenant(request)
            await self._context(request, key)     # validated; never selects anything
        except Refused as refused:
            return _json(refused.status, refused.body) if refused.body else web.Response(status=refused.status)
        try:
            flag = self.flags(tenant)(key)
        except FlagNotFound:
            return _json(404, {"key": key, "errorCode": "FLAG_NOT_FOUND",
                               "errorDetails": f"no flag {key!r} for this tenant"})
        if self.on_evaluated is not None:
            self.on_evaluated(tenant, [flag])
        return _json(200, flag.as_ofrep())

    async def evaluate_bulk(self, request: web.Request) -> web.Response:
        try:
            tenant = await self._tenant(request)
            await self._context(request, None)
        except Refused as refused:
            return _json(refused.status, refused.body) if refused.body else web.Response(status=refused.status)
        flags = self.flags(tenant)(None)
        body = orjson.dumps({"flags": [f.as_ofrep() for f in flags]})
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if etag in _etags(request.headers.get("If-None-Match", "")):
            return web.Response(status=304, headers={"ETag": etag})
        if self.on_evaluated is not None:
            self.on_evaluated(tenant, flags)
        return web.Response(status=200, body=body, content_type="application/json", headers={"ETag": etag})


def _etags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header (weak ones compare as strong here)."""
    tags = set()
    for part in header.split(","):
        part = part.strip()
        if part.startswith("W/"):
            part = part[2:]
        if part:
            tags.add(part if part.startswith('"') else f'"{part}"')
    return tags
