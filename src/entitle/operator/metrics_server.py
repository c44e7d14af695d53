"""``/metrics`` behind authentication (DESIGN "Integrity against the tenant": metrics reveal
nothing across tenants): every tenant's usage, caps and licenses are in it, so it answers only a
caller whose bearer token the apiserver authenticates (TokenReview) and authorizes for ``get`` on
the non-resource URL ``/metrics`` (SubjectAccessReview) -- what kube-rbac-proxy does -- over HTTPS.

The exposition is rendered off the event loop: the loop also serves admissions, and 500 tenants'
series take a while to format.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from entitle.adapters.kube.token_review import AccessReviewer, TokenReviewer, TokenReviewUnavailable

log = logging.getLogger("entitle.metrics")


class MetricsServer:
    """Serves ``/metrics``; with ``reviewer`` and ``access`` only to authorized callers."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None,
                 reviewer: TokenReviewer | None = None, access: AccessReviewer | None = None) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.reviewer, self.access = reviewer, access
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.reviewer is not None and self.access is not None:
            refusal = await self._refusal(request)
            if refusal is not None:
                return refusal
        body = await asyncio.to_thread(generate_latest, REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _refusal(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return web.Response(status=401, text="a bearer token is required",
                                headers={"WWW-Authenticate": 'Bearer realm="entitle-metrics"'})
        try:
            caller = await self.reviewer.caller(header[7:].strip())
            if not caller.authenticated:
                return web.Response(status=401, text="the token was not accepted")
            if not await self.access.allowed(caller, "get", "/metrics"):
                return web.Response(status=403, text=f"{caller.username} may not get /metrics")
        except TokenReviewUnavailable as exc:
            log.warning("metrics: the apiserver could not review a caller: %s", exc)
            return web.Response(status=503, text="cannot review the caller now")
        return None

    async def start(self) -> None:
        app = web.Application(client_max_size=1024)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=self.tls).start()
        log.info("metrics serving", extra={"port": self.port, "authentication": self.reviewer is not None})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def metrics_server(cfg: Any, async_api: Any, certificate: Any) -> MetricsServer:
    """The operator's metrics endpoint as configured (``metricsAuthentication``)."""
    from entitle.adapters.kube.token_review import kube_access_review, kube_review

    host = cfg.metrics_host or cfg.webhook.listen_host
    if not cfg.metrics_authentication:
        return MetricsServer(host, cfg.metrics_port)
    return MetricsServer(host, cfg.metrics_port, certificate.metrics_tls.context,
                         TokenReviewer(kube_review(async_api), max_ttl=60.0),
                         AccessReviewer(kube_access_review(async_api)))
