"""The operator's asynchronous API client against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from kubernetes import client

from entitle.adapters.kube.async_api import AsyncApi


async def _serve(drop_first: int):
    """An HTTP/1.1 server that closes the first ``drop_first`` connections after reading a
    request, without answering (a keep-alive connection the server had already closed), then
    answers ``{"ok": n}`` to each request."""
    state = {"connections": 0, "answered": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state["connections"] += 1
        drop = state["connections"] <= drop_first
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if drop:
                    break
                state["answered"] += 1
                body = b'{"ok": %d}' % state["answered"]
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], state


def _api(port: int) -> AsyncApi:
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{port}"
    return AsyncApi(cfg)


def test_a_connection_closed_by_the_server_is_retried_once_on_a_fresh_one():
    async def scenario():
        server, port, state = await _serve(drop_first=1)
        api = _api(port)
        try:
            # POST and PATCH: aiohttp itself resends only idempotent methods.
            assert await api.request("POST", "api/v1/namespaces/x/events", {"a": 1}, ok=(200,)) == (200, {"ok": 1})
            assert state["connections"] == 2
            assert await api.request("PATCH", "api/v1/namespaces/x/configmaps/y", {"a": 1}) == (200, {"ok": 2})
        finally:
            await api.close()
            server.close()

    asyncio.run(scenario())


def test_a_server_that_keeps_dropping_fails_the_call():
    async def scenario():
        server, port, state = await _serve(drop_first=10)
        api = _api(port)
        try:
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await api.request("POST", "api/v1/namespaces/x/events", {"a": 1})
            assert state["connections"] == 2      # one retry, not a loop
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await api.request("GET", "api/v1/namespaces/x/configmaps/y")
            assert state["connections"] == 4      # (GET: aiohttp's own single retry, none added)
        finally:
            await api.close()
            server.close()

    asyncio.run(scenario())
