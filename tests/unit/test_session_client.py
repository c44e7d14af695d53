"""The application client (entitle.client.sessions) over real HTTP on loopback against the
session routes and service of the operator, with the in-memory store (the apiserver-backed
store is exercised by tests/e2e/test_sessions.py). Real time: ttls are the 5 s minimum."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timezone

import pytest
from aiohttp import web

from entitle.adapters.kube.sessions import MemorySessionStore
from entitle.adapters.openfeature.sessions_http import session_routes
from entitle.client.sessions import SessionCapExceeded, SessionClient, SessionError, SessionNotFound
from entitle.operator.sessions import SessionService
from tests.conftest import free_port, wait_for
from tests.unit.builders import lic, state_with


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        self.status, self.body = status, None


class Server:
    """The session routes on a loopback port, on their own event loop thread; token -> tenant."""

    def __init__(self, **sessions) -> None:
        self.state = state_with(lic("base", sessions=sessions))
        self.service = SessionService(self.state, MemorySessionStore(), lambda record: None, "test",
                                      lambda: datetime.now(timezone.utc))
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()

        async def tenant(request: web.Request) -> str:
            if request.headers.get("Authorization") != "Bearer acme-token":
                raise _Refused(401)
            return "acme"

        session_routes(app, tenant, _Refused, self.service)
        self.runner = runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.sweeper = self.loop.create_task(self.service.run_sweeper(0.2))
        ready.set()
        self.loop.run_forever()

    def used(self) -> int:
        return self.service.used("acme")

    def stop(self) -> None:
        async def shut() -> None:
            self.sweeper.cancel()
            await self.runner.cleanup()
        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def server(request):
    srv = Server(**getattr(request, "param", {"max": 2, "ttlSeconds": 5, "perUser": False}))
    yield srv
    srv.stop()


def _client(server: Server, token: str = "acme-token") -> SessionClient:
    return SessionClient(f"http://127.0.0.1:{server.port}", token=token, timeout=5)


def test_a_seat_is_held_renewed_in_the_background_and_given_back_on_exit(server):
    client = _client(server)
    with client.seat("ann", ttl_seconds=5) as seat:
        assert server.used() == 1 and seat.ttl_seconds == 5 and not seat.warnings
        # Past one ttl: only the background heartbeats keep it.
        wait_for(lambda: seat.heartbeats >= 4, timeout=15, message="four background heartbeats")
        assert server.used() == 1 and not seat.lost.is_set()
    assert server.used() == 0
    with pytest.raises(SessionNotFound):
        client.heartbeat(seat)


def test_a_full_pool_raises_with_the_numbers_and_a_bad_token_is_an_error(server):
    client = _client(server)
    with client.seat("ann"), client.seat("bob"):
        with pytest.raises(SessionCapExceeded) as full:
            client.checkout("cid")
        assert full.value.status == 409 and full.value.used == 2 and full.value.max == 2
        assert "would exceed 2" in full.value.message
    with pytest.raises(SessionError) as denied:
        _client(server, token="forged").checkout("ann")
    assert denied.value.status == 401
    with pytest.raises(SessionError) as down:
        SessionClient(f"http://127.0.0.1:{free_port()}", token="acme-token", timeout=2).checkout("ann")
    assert down.value.status == 0


def test_a_seat_returned_elsewhere_is_reported_lost_once(server):
    client, lost = _client(server), []
    with client.seat("ann", on_lost=lost.append) as seat:
        client.checkin(seat)                  # e.g. an admin or another process gave it back
        wait_for(lambda: seat.lost.is_set(), timeout=10, message="the client to notice its seat is gone")
        assert lost == [seat]
    assert server.used() == 0


def test_a_retry_with_the_same_session_name_takes_no_second_seat(server):
    client = _client(server)
    first = client.checkout("ann", session="tab-1")
    again = client.checkout("ann", session="tab-1")
    assert again.id == first.id and server.used() == 1
    client.checkin(first)


@pytest.mark.parametrize("server", [{"max": 1, "ttlSeconds": 5, "burst": {"extra": 1, "window": "1h"}}],
                         indirect=True)
def test_a_seat_above_max_within_the_burst_comes_with_a_warning(server):
    client = _client(server)
    with client.seat("ann") as first, client.seat("bob") as second:
        assert not first.warnings
        assert len(second.warnings) == 1 and "above max 1" in second.warnings[0]
        with pytest.raises(SessionCapExceeded):
            client.checkout("cid")


def test_a_killed_holder_lapses_within_one_ttl(server):
    client = _client(server)
    seat = client.checkout("ann", ttl_seconds=5)      # no heartbeats: the holder died
    began = time.monotonic()
    wait_for(lambda: server.used() == 0, timeout=10, message="the seat to lapse")
    assert 4.5 <= time.monotonic() - began <= 6.5
    with pytest.raises(SessionNotFound):
        client.heartbeat(seat)


def test_a_check_out_is_retried_only_where_a_retry_cannot_take_a_second_seat():
    """429 (nothing taken) always; 503 (perhaps written) only with the app's session name."""
    import http.server

    answers: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            status = answers.pop(0) if answers else 200
            body = b'{"reason": "x", "message": "y"}' if status != 200 else \
                b'{"id": "s1", "ttlSeconds": 5, "expiresAt": "2026-01-01T00:00:00Z"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = SessionClient(f"http://127.0.0.1:{httpd.server_port}", token="t")
        answers[:] = [429, 429]
        assert client.checkout("ann").id == "s1" and not answers
        answers[:] = [503]
        with pytest.raises(SessionError) as unnamed:
            client.checkout("ann")
        assert unnamed.value.status == 503
        answers[:] = [503, 429]
        assert client.checkout("ann", session="tab-1").id == "s1" and not answers
        answers[:] = [429] * 4
        with pytest.raises(SessionError):
            client.checkout("ann")
    finally:
        httpd.shutdown()
        httpd.server_close()
