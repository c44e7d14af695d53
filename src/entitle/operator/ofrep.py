"""Wiring of the OFREP endpoint (adapters/openfeature/ofrep.py) to the operator's in-memory
state, the token reviewer, the feature counters and the metrics; and of the session API on the
same port (adapters/openfeature/sessions_http.py) to the session service (operator/sessions.py)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from datetime import datetime
from typing import Any, Callable, Iterable

from aiohttp import web

from entitle.adapters.kube.informer import Informer
from entitle.adapters.kube.sessions import LABEL as SESSION_LABEL
from entitle.adapters.kube.sessions import AsyncSessionStore
from entitle.adapters.kube.token_review import TokenReviewer, kube_review
from entitle.adapters.openfeature.ofrep import OfrepApp, Refused
from entitle.adapters.openfeature.sessions_http import session_routes
from entitle.domain.flags import Flag, evaluate, evaluate_all
from entitle.domain.state import ClusterState
from entitle.operator import metrics
from entitle.operator.feature_usage import FeatureUsage
from entitle.operator.sessions import SessionService

log = logging.getLogger("entitle.ofrep")


class OfrepServer:
    def __init__(self, state: ClusterState, append: Callable[[dict], None], ready: asyncio.Event,
                 clock: Callable[[], datetime], cfg: Any, async_api: Any,
                 ledger_sessions: Callable[[], Iterable[tuple[str, str]]] | None = None) -> None:
        self.state, self.clock, self.cfg = state, clock, cfg
        self.usage = FeatureUsage(append, cfg.source)
        reviewer = TokenReviewer(kube_review(async_api), max_ttl=cfg.ofrep.token_cache_seconds,
                                 audiences=(cfg.ofrep.audience,) if cfg.ofrep.audience else ())
        self.app = OfrepApp(reviewer, state.tenant_of, self._flags, self._evaluated, ready=ready.is_set)
        self.app.app.middlewares.append(self._count_requests)
        # Concurrent sessions share the port and the identity (DESIGN "Concurrent seats").
        self.sessions = SessionService(state, AsyncSessionStore(async_api, cfg.namespace), append, cfg.source, clock)
        session_routes(self.app.app, self.app._tenant, Refused, self.sessions,
                       on_request=lambda op, code: metrics.SESSION_REQUESTS.labels(operation=op, code=str(code)).inc())
        self.async_api = async_api
        self.ledger_sessions = ledger_sessions
        self._reconciled: asyncio.Task | None = None
        self._informer: Informer | None = None
        self._sweeper: asyncio.Task | None = None
        self._runner: web.AppRunner | None = None
        self._flusher: asyncio.Task | None = None

    def _flags(self, tenant: str) -> Any:
        state, now = self.state, self.clock()
        ent, usage, known = state.entitlement(tenant, now), state.usage[tenant], state.known_features()

        def flags(key: str | None) -> Any:
            if key is None:
                return evaluate_all(ent, usage, known, now)
            return evaluate(key, ent, usage, known, now)

        return flags

    def _evaluated(self, tenant: str, flags: list[Flag]) -> None:
        features = [f.key for f in flags if isinstance(f.value, bool)]
        for feature in features:
            metrics.FEATURE_EVALUATIONS.labels(tenant=tenant, feature=feature).inc()
        self.usage.count(tenant, features)

    @web.middleware
    async def _count_requests(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        if request.path.startswith("/sessions/"):
            return response
        endpoint = "bulk" if request.path.rstrip("/").endswith("/flags") else "single"
        metrics.OFREP_REQUESTS.labels(endpoint=endpoint, code=str(response.status)).inc()
        return response

    async def start(self) -> None:
        ofrep = self.cfg.ofrep
        context = None
        if ofrep.cert_file and ofrep.key_file:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(ofrep.cert_file, ofrep.key_file)
        self._runner = web.AppRunner(self.app.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, ofrep.listen_host, ofrep.port, ssl_context=context).start()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        collection = f"api/v1/namespaces/{self.cfg.namespace}/configmaps?labelSelector={SESSION_LABEL}%3Dtrue"
        self._informer = Informer(self.async_api, collection, on_event=self.sessions.watch_event,
                                  on_error=lambda exc: exc and log.warning("session watch: %s", exc)).start()
        self._sweeper = asyncio.get_running_loop().create_task(self.sessions.run_sweeper())
        self._reconciled = asyncio.get_running_loop().create_task(self._reconcile_vanished())
        log.info("OFREP endpoint listening", extra={"port": ofrep.port, "tls": context is not None})

    async def _reconcile_vanished(self) -> None:
        """Once the session objects are listed, end in the ledger what ended while this replica
        was down (operator/sessions: SessionService.reconcile_vanished)."""
        if self.ledger_sessions is None or self._informer is None:
            return
        await self._informer.synced.wait()
        try:
            ended = self.sessions.reconcile_vanished(self.ledger_sessions())
        except Exception:  # noqa: BLE001 -- a damaged ledger row must not take the endpoint down
            log.exception("reconciling sessions that ended while the operator was down failed")
            return
        if ended:
            log.info("sessions ended while the operator was down recorded", extra={"sessions": ended})

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(30)
            try:
                self.usage.flush()
            except Exception:  # never let counting take the endpoint down
                log.exception("flushing feature usage failed")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        for task in (self._sweeper, self._reconciled):
            if task is not None:
                task.cancel()
        if self._informer is not None:
            await self._informer.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        self.usage.flush(everything=True)
