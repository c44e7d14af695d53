"""The dashboard's HTTP server (aiohttp): pages rendered from the :class:`Dashboard`, live
updates as Server-Sent Events, the package's static assets. Read-only: GET only, nothing is
ever written to the cluster; it listens on loopback unless told otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from importlib import resources

from aiohttp import web

from entitle.adapters.dashboard import render
from entitle.adapters.dashboard.model import Dashboard

CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; " \
      "form-action 'none'; frame-ancestors 'none'"
STATIC = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}


def dashboard_app(dash: Dashboard, clock: Callable[[], datetime], poll: float = 0.5) -> web.Application:
    assets = {name: (resources.files("entitle.adapters.dashboard") / "static" / name).read_bytes() for name in STATIC}

    @web.middleware
    async def headers(request: web.Request, handler):
        response = await handler(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def html(request: web.Request, title: str, main: str) -> web.Response:
        if request.query.get("fragment"):
            return web.Response(text=main, content_type="text/html")
        return web.Response(text=render.document(title, main, dash.version), content_type="text/html")

    async def index(request: web.Request) -> web.Response:
        return html(request, "Entitlements", render.index(dash, clock()))

    async def tenant(request: web.Request) -> web.Response:
        name = request.match_info["tenant"]
        main = render.tenant_page(dash, name, clock())
        if main is None:
            raise web.HTTPNotFound(text="no such tenant among those these credentials may read")
        return html(request, f"Tenant {name}", main)

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in assets:
            raise web.HTTPNotFound()
        return web.Response(body=assets[name], content_type=STATIC[name])

    async def updates(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        sent = None
        try:
            while True:
                if dash.version != sent:
                    sent = dash.version
                    await response.write(f"data: {sent}\n\n".encode())
                await asyncio.sleep(poll)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    app = web.Application(middlewares=[headers])
    app.router.add_get("/", index)
    app.router.add_get("/t/{tenant}", tenant)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/updates", updates)
    app.router.add_get("/healthz", lambda _: web.Response(text="ok"))
    return app
