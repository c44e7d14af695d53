"""A minimal asynchronous Kubernetes API client (aiohttp) for the operator's frequent writes:
capacity holds on the admission path, status patches from the controller.

The generated ``kubernetes`` client is synchronous (a worker thread per call) and builds model
objects for every request and response -- several milliseconds of CPU per call that compete,
under the GIL, with the webhook. This client sends bytes and reads the few fields it needs.
Credentials come from the same ``kubernetes.client.Configuration`` (kubeconfig or in-cluster).
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
import orjson
from kubernetes import client


class ApiError(Exception):
    """A non-success answer from the apiserver (status code and body)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body[:500]}")
        self.status, self.body = status, body


class AsyncApi:
    def __init__(self, configuration: client.Configuration) -> None:
        self.configuration = configuration
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._closed:
            # After shutdown a late write must not open a session nobody will close.
            raise ApiError(0, "the API client is closed (shutting down)")
        if self._session is None or self._session.closed:
            cfg = self.configuration
            context: ssl.SSLContext | bool = False
            if cfg.verify_ssl:
                context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
            elif cfg.cert_file:
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            if context and cfg.cert_file:
                context.load_cert_chain(cfg.cert_file, cfg.key_file)
            self._session = aiohttp.ClientSession(
                base_url=cfg.host.rstrip("/") + "/", connector=aiohttp.TCPConnector(ssl=context, limit=32),
                timeout=aiohttp.ClientTimeout(total=10))
        return self._session

    def _headers(self, content_type: str | None) -> dict[str, str]:
        # Re-evaluated per call: in a pod the ServiceAccount token file is rotated by the
        # kubelet, and the configuration's refresh hook re-reads it when due.
        auth = self.configuration.auth_settings().get("BearerToken")
        headers = {"Authorization": auth["value"]} if auth and auth.get("value") else {}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                      params: dict[str, str] | None = None, ok: tuple[int, ...] = (200, 201)) -> tuple[int, Any]:
        """(status, decoded body); raises :class:`ApiError` unless the status is in ``ok``.

        A pooled keep-alive connection the apiserver closed just before it was reused fails
        with ``ServerDisconnectedError``; aiohttp sends GET/PUT/DELETE once more itself, never
        POST or PATCH. Every POST and PATCH made through this client is safe to repeat (creates
        answer 409 the second time, status merge patches are idempotent, a TokenReview reads),
        so they are sent once more here on a fresh connection."""
        data = orjson.dumps(body) if body is not None else None
        try:
            return await self._send(method, path, data, content_type, params, ok)
        except aiohttp.ServerDisconnectedError:
            if method not in ("POST", "PATCH"):
                raise       # (aiohttp has already sent it a second time)
            return await self._send(method, path, data, content_type, params, ok)

    async def _send(self, method: str, path: str, data: bytes | None, content_type: str,
                    params: dict[str, str] | None, ok: tuple[int, ...]) -> tuple[int, Any]:
        async with self._session_for_loop().request(
                method, path.lstrip("/"), data=data, params=params,
                headers=self._headers(content_type if data is not None else None)) as resp:
            raw = await resp.read()
            if resp.status not in ok:
                raise ApiError(resp.status, raw.decode(errors="replace"))
            return resp.status, (orjson.loads(raw) if raw else None)

    async def stream(self, path: str, params: dict[str, str], read_timeout: float) -> Any:
        """An open response whose body is JSON lines (a watch); the caller iterates
        ``response.content`` and must release it. No overall timeout: a watch lasts."""
        response = await self._session_for_loop().request(
            "GET", path.lstrip("/"), params=params, headers=self._headers(None),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout))
        if response.status != 200:
            raw = await response.read()
            response.release()
            raise ApiError(response.status, raw.decode(errors="replace"))
        return response

    async def close(self) -> None:
        self._closed = True
        if self._session is not None and not self._session.closed:
            await self._session.close()
