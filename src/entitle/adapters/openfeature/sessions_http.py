"""The session check-out API on the OFREP port (DESIGN "Concurrent seats"), same identity as
OFREP: the bearer ServiceAccount token decides the tenant, nothing in the body does.

- ``POST /sessions/v1/checkout`` ``{"user", "session"?, "ttlSeconds"?}`` -> 200 ``{"id",
  "expiresAt", "ttlSeconds", "checkedOut", "warnings"?}`` (``warnings``: the seat is above
  ``max`` within the burst allowance, with the budget left) or 409 ``{"reason": "SessionCapExceeded", "message",
  "used", "max"}``. ``session`` is the client's own name for the session: checking out again
  with it (a retry) renews the same session instead of taking a second seat.
- ``POST /sessions/v1/{id}/heartbeat`` -> 200 ``{"id", "expiresAt"}``; 404 when it is not a live
  session of the caller's tenant (checked in, lapsed, another tenant's, or made up).
- ``DELETE /sessions/v1/{id}`` -> 204; 404 as above.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from entitle.api.common import format_time
from entitle.domain.sessions import Session, SessionRefused

MAX_BODY = 4 * 1024
MAX_ID_LENGTH = 64


class Sessions(Protocol):
    async def checkout(self, tenant: str, user: object, key: object = None, ttl: object = None,
                       warnings: list[str] | None = None) -> Session: ...
    async def heartbeat(self, tenant: str, sid: str) -> Session: ...
    async def checkin(self, tenant: str, sid: str) -> None: ...


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _refusal(refused: SessionRefused) -> web.Response:
    return _json(refused.status, {"reason": refused.reason, "message": refused.message, **refused.numbers})


def _answer(session: Session) -> dict:
    return {"id": session.id, "expiresAt": format_time(session.expires), "ttlSeconds": session.ttl,
            "checkedOut": format_time(session.since)}


def session_routes(app: web.Application, tenant_of_request: Callable[[web.Request], Awaitable[str]],
                   refused_type: type, service: Sessions, on_request: Callable[[str, int], None] | None = None) -> None:
    """Add the three routes to ``app``. ``tenant_of_request`` raises ``refused_type`` (with
    ``status`` and ``body``) for a caller OFREP refuses (401/403/500)."""

    async def tenant(request: web.Request) -> str | web.Response:
        try:
            return await tenant_of_request(request)
        except refused_type as refused:     # type: ignore[misc]
            status, body = refused.status, refused.body   # type: ignore[attr-defined]
            return _json(status, body) if body else web.Response(status=status)

    def counted(operation: str, handler: Callable[[web.Request], Awaitable[web.Response]]):
        async def run(request: web.Request) -> web.Response:
            response = await handler(request)
            if on_request is not None:
                on_request(operation, response.status)
            return response
        return run

    def session_id(request: web.Request) -> str:
        sid = request.match_info["id"]
        if not sid or len(sid) > MAX_ID_LENGTH:
            raise SessionRefused(404, "SessionNotFound", "no such session")
        return sid

    async def checkout(request: web.Request) -> web.Response:
        who = await tenant(request)
        if isinstance(who, web.Response):
            return who
        raw = await request.read()
        if len(raw) > MAX_BODY:
            return _json(413, {"reason": "BadRequest", "message": f"the body is limited to {MAX_BODY} bytes"})
        try:
            body = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            return _json(400, {"reason": "BadRequest", "message": "the body is not JSON"})
        if not isinstance(body, dict):
            return _json(400, {"reason": "BadRequest", "message": "the body must be a JSON object"})
        unknown = sorted(set(body) - {"user", "session", "ttlSeconds"})
        if unknown:
            return _json(400, {"reason": "BadRequest", "message": f"unknown fields: {', '.join(unknown)[:200]}"})
        warnings: list[str] = []
        try:
            session = await service.checkout(who, body.get("user"), body.get("session"), body.get("ttlSeconds"),
                                             warnings)
        except SessionRefused as refused:
            return _refusal(refused)
        answer = _answer(session)
        if warnings:
            answer["warnings"] = warnings
        return _json(200, answer)

    def on_session(call: Callable[[str, str], Awaitable[Session | None]]):
        """A handler of ``/sessions/v1/{id}...``: 200 with the renewed session, or 204."""
        async def run(request: web.Request) -> web.Response:
            who = await tenant(request)
            if isinstance(who, web.Response):
                return who
            try:
                session = await call(who, session_id(request))
            except SessionRefused as refused:
                return _refusal(refused)
            return web.Response(status=204) if session is None else _json(200, _answer(session))
        return run

    app.router.add_post("/sessions/v1/checkout", counted("checkout", checkout))
    app.router.add_post("/sessions/v1/{id}/heartbeat", counted("heartbeat", on_session(service.heartbeat)))
    app.router.add_delete("/sessions/v1/{id}", counted("checkin", on_session(service.checkin)))
