"""The admission webhook's HTTPS endpoint: AdmissionReview in, AdmissionReview out.

entitle serves admission itself (aiohttp) instead of through Kopf's admission handlers:
Kopf builds a full handler-invocation context (causes, settings, retries, per-request logging)
for every review, which cost more than the decision itself (see docs/performance.md). This
module knows HTTP, TLS and the AdmissionReview envelope; what to decide is a callback.

The TLS context is reloadable in place: new handshakes use the new certificate, so certificate
rotation (by the operator or cert-manager) never restarts the process or drops connections.

**Only the apiserver reviews** (DESIGN "Integrity against the tenant"). With a client CA the
server asks every client for a certificate: one not signed by that CA fails the handshake, and a
review sent without one is refused (403) before it is read -- a forged CREATE holds no capacity,
a forged dry run reads no tenant's usage, a forged License review names nothing. The apiserver
presents its certificate from its AdmissionConfiguration (``kubeConfigFile``). Probes
(``GET /readyz``) need none.
"""

from __future__ import annotations

import base64
import logging
import ssl
from pathlib import Path
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger("entitle.webhook")


class AdmissionDenied(Exception):
    """Raised by a review callback to deny the request with an HTTP-like ``code``; with
    ``retry_after`` the apiserver answers its client with a ``Retry-After`` header (client-go
    and kubectl retry a 429 that carries one)."""

    def __init__(self, message: str, code: int = 403, reason: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.retry_after = code, reason, retry_after


@dataclass
class Review:
    """The parts of an ``admission.k8s.io/v1`` AdmissionRequest entitle uses."""

    operation: str
    subresource: str | None
    namespace: str | None
    name: str | None
    body: dict[str, Any] | None
    old: dict[str, Any] | None
    dry_run: bool
    warnings: list[str] = field(default_factory=list)
    # The requested resource (group, version, resource plural): the kind of a scale request is
    # autoscaling Scale, its resource is the scaled kind's.
    resource: tuple[str, str, str] = ("", "", "")
    # Mutating callbacks fill this with RFC 6902 operations.
    patch: list[dict[str, Any]] = field(default_factory=list)
    # Who asked (userInfo.username) and with which field manager (the request's options):
    # the License webhooks keep them as the audit trail.
    user: str | None = None
    field_manager: str | None = None


ReviewCallback = Callable[[Review], Awaitable[None]]


def parse(request: dict[str, Any]) -> Review:
    def text(key: str) -> str | None:
        value = request.get(key)
        return value if isinstance(value, str) and value else None

    resource = request.get("resource") if isinstance(request.get("resource"), dict) else {}
    user_info = request.get("userInfo") if isinstance(request.get("userInfo"), dict) else {}
    options = request.get("options") if isinstance(request.get("options"), dict) else {}
    user = user_info.get("username") if isinstance(user_info.get("username"), str) else None
    manager = options.get("fieldManager") if isinstance(options.get("fieldManager"), str) else None
    return Review(user=user, field_manager=manager,
                  operation=text("operation") or "", subresource=text("subResource"),
                  namespace=text("namespace"), name=text("name"),
                  body=request.get("object"), old=request.get("oldObject"), dry_run=request.get("dryRun") is True,
                  resource=tuple(str(resource.get(k) or "") for k in ("group", "version", "resource")))


def respond(uid: str, review: Review | None, error: AdmissionDenied | None) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": error is None}
    if review is not None and review.warnings:
        response["warnings"] = review.warnings
    if error is not None:
        response["status"] = {"code": error.code, "message": str(error),
                              **({"reason": error.reason} if error.reason else {}),
                              **({"details": {"retryAfterSeconds": error.retry_after}} if error.retry_after else {})}
    elif review is not None and review.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(review.patch)).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


class ReloadableTLS:
    """A server SSLContext whose certificate can be replaced while serving; with ``client_ca``,
    client certificates signed by it are asked for and verified (see :meth:`trusted_client`)."""

    def __init__(self, certfile: str, keyfile: str, client_ca: str | None = None,
                 client_names: list[str] | None = None) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.client_ca, self.client_names = client_ca, list(client_names or [])
        self._client_ca_pem: bytes | None = None
        self.load(certfile, keyfile)
        if client_ca:
            # OPTIONAL, not REQUIRED: the kubelet's readiness probe has no certificate; every
            # admission path refuses a client without one (AdmissionServer._handle).
            self.context.verify_mode = ssl.CERT_OPTIONAL
            self.reload_client_ca()

    def load(self, certfile: str, keyfile: str) -> None:
        # load_cert_chain on a live context affects only handshakes that start afterwards.
        self.context.load_cert_chain(certfile, keyfile)

    def reload_client_ca(self) -> bool:
        """Trust the CA file's current certificates (a rotation appends the new CA: it is trusted
        from the next handshake; a removed CA stays trusted until the process restarts)."""
        pem = Path(self.client_ca).read_bytes() if self.client_ca else None
        if pem is None or pem == self._client_ca_pem:
            return False
        self.context.load_verify_locations(cadata=pem.decode())
        self._client_ca_pem = pem
        return True

    def trusted_client(self, peercert: Any) -> bool:
        """A verified client certificate (and, when names are configured, one of them)."""
        if not self.client_ca:
            return True
        if not peercert:
            return False
        if not self.client_names:
            return True
        names = {value for field in peercert.get("subject", ()) for key, value in field if key == "commonName"}
        names |= {value for kind, value in peercert.get("subjectAltName", ()) if kind == "DNS"}
        return bool(names & set(self.client_names))


class AdmissionServer:
    """Serves ``routes`` (path -> callback) over HTTPS until ``stop``."""

    # Longer than the apiserver's idle-connection timeout (90 s): the client, not the server,
    # closes idle keep-alive connections. A server-side idle close races with the client sending
    # its next review on that connection, and an admission POST is not retried (EOF: denied).
    keepalive_seconds = 120.0

    def __init__(self, routes: dict[str, ReviewCallback], host: str, port: int, tls: ReloadableTLS,
                 ready: Callable[[], bool] = lambda: True, drain_seconds: float = 3.0,
                 reuse_port: bool = False, on_refused: Callable[[], None] | None = None) -> None:
        self.routes, self.host, self.port, self.tls, self.ready = routes, host, port, tls, ready
        self.drain_seconds = drain_seconds
        # Several worker processes on one port (the kernel spreads connections over them).
        self.reuse_port = reuse_port
        self.draining = False
        self.refused = 0          # reviews refused for want of the apiserver's client certificate
        self.on_refused = on_refused
        self._runner: web.AppRunner | None = None

    async def _readyz(self, request: web.Request) -> web.Response:
        # The readiness probe: a replica takes traffic once it can decide from primed state.
        if self.draining:
            return web.Response(status=503, text="stopping")
        return web.Response(text="ok") if self.ready() else web.Response(status=503, text="starting")

    async def _handle(self, request: web.Request) -> web.Response:
        transport = getattr(request, "transport", None)
        if self.tls is not None and not self.tls.trusted_client(
                transport.get_extra_info("peercert") if transport is not None else None):
            # Before anything is read: no decision, hold, Event or impact line for a forger.
            self.refused += 1
            if self.on_refused is not None:
                self.on_refused()
            return web.Response(status=403, text="admission reviews are taken from the apiserver only: present its "
                                                 "webhook client certificate")
        callback = self.routes.get(request.path)
        if callback is None:
            return web.Response(status=404, text="no such webhook")
        try:
            envelope = orjson.loads(await request.read())
            admission = envelope["request"]
            uid = admission["uid"]
            if not isinstance(admission, dict) or not isinstance(uid, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="not an admission.k8s.io/v1 AdmissionReview")
        review = parse(admission)
        try:
            await callback(review)
            error = None
        except AdmissionDenied as exc:
            error = exc
        except Exception as exc:  # a bug or an unreachable apiserver: deny clearly, keep serving
            log.exception("admission callback failed")
            error = AdmissionDenied(f"entitle could not decide: {exc}", code=500)
        response = web.Response(body=orjson.dumps(respond(uid, review, error)), content_type="application/json")
        if self.draining:
            # Stopping: this connection closes after this answer (Connection: close), which the
            # client sees before it sends another review on it -- no request is cut off.
            response.force_close()
        return response

    async def start(self) -> None:
        """Listen (idempotent: a retried start-up does not bind the port twice)."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_post("/{path:.*}", self._handle)
        # No per-request access log: at hundreds of reviews per second it costs more than deciding.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     keepalive_timeout=self.keepalive_seconds)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=self.tls.context,
                          backlog=1024, reuse_port=self.reuse_port or None).start()
        log.info("admission webhook serving on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Drain, then stop: for ``drain_seconds`` every answer closes its connection (and
        readiness fails), so the apiserver's keep-alive connections to this replica end cleanly
        after a response instead of being cut under a request in flight."""
        if self._runner is not None and not self.draining and self.drain_seconds > 0:
            import asyncio

            self.draining = True
            await asyncio.sleep(self.drain_seconds)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
