"""A floating seat for an application: check out, keep renewed in the background, give back.

    from entitle.client.sessions import SessionClient, SessionCapExceeded

    seats = SessionClient("http://entitle-webhook.entitle-system.svc:8016")
    try:
        with seats.seat(user="ann") as seat:      # POST /sessions/v1/checkout
            ...                                    # heartbeats every ttl/3 on a daemon thread
            if seat.lost.is_set(): ...             # renewal refused: the seat is gone
    except SessionCapExceeded as full:
        print(f"all {full.max} seats are in use")  # 409, with the numbers

Standard library only (``urllib``), so an app takes no dependency for it. The token is read on
every request -- the kubelet rotates a projected ServiceAccount token -- from ``token`` (a
string or a callable) or the file ``/var/run/secrets/entitle/token``.

**Renewal.** A heartbeat every third of the ttl, so two can fail (a replica restarting, a
network blip) before the seat lapses; failed heartbeats are retried with a short backoff until
the seat's own ``expiresAt``. A 404 (the operator lapsed or another call returned it) means the
seat is gone: :attr:`Seat.lost` is set and ``on_lost`` called once -- the app decides what to do
(stop the user's work, check out again). Leaving the block checks the seat in; if that fails the
seat lapses by itself after its ttl.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

DEFAULT_TOKEN_FILE = "/var/run/secrets/entitle/token"


class SessionError(Exception):
    """The operator refused a session call, or could not be reached; ``status`` 0 for the latter."""

    def __init__(self, status: int, reason: str, message: str, body: dict | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status, self.reason, self.message, self.body = status, reason, message, body or {}


class SessionCapExceeded(SessionError):
    """Every seat is taken (409 ``SessionCapExceeded``); ``used`` and ``max`` say how many."""

    @property
    def used(self) -> int | None:
        return self.body.get("used")

    @property
    def max(self) -> int | None:
        return self.body.get("max")


class SessionNotFound(SessionError):
    """The session is not live any more (404): checked in, lapsed, or never this tenant's."""


@dataclass
class Seat:
    """A checked-out session. ``lost`` is set when a renewal is refused (the seat is gone)."""

    id: str
    user: str
    ttl_seconds: int
    expires_at: str
    warnings: list[str] = field(default_factory=list)
    lost: threading.Event = field(default_factory=threading.Event)
    heartbeats: int = 0


class SessionClient:
    def __init__(self, url: str, token: str | Callable[[], str] | None = None,
                 token_file: str = DEFAULT_TOKEN_FILE, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._token, self._token_file, self.timeout = token, token_file, timeout

    # --- the three calls ------------------------------------------------------------------
    def checkout(self, user: str, session: str | None = None, ttl_seconds: int | None = None,
                 attempts: int = 4) -> Seat:
        """Take a seat for ``user``. ``session``: the app's own name for this session; checking
        out again with it (a retry after a timeout) renews the same seat, never a second one.

        Retried (up to ``attempts``, backing off): a 429, which the operator answers without
        taking anything; and -- only with ``session``, where a retry cannot take a second seat --
        a 503 or an unreachable operator, whose check-out may or may not have been written."""
        body: dict = {"user": user}
        if session is not None:
            body["session"] = session
        if ttl_seconds is not None:
            body["ttlSeconds"] = ttl_seconds
        for attempt in range(attempts):
            try:
                answer = self._call("POST", "/sessions/v1/checkout", body)
                break
            except SessionError as error:
                retry = error.status == 429 or (session is not None and error.status in (0, 503))
                if not retry or attempt == attempts - 1:
                    raise
                time.sleep(min(0.1 * 2 ** attempt, 2.0))
        return Seat(answer["id"], user, int(answer["ttlSeconds"]), answer["expiresAt"],
                    list(answer.get("warnings") or []))

    def heartbeat(self, seat: Seat) -> None:
        answer = self._call("POST", f"/sessions/v1/{quote(seat.id, safe='')}/heartbeat")
        seat.expires_at = answer["expiresAt"]
        seat.heartbeats += 1

    def checkin(self, seat: Seat) -> None:
        self._call("DELETE", f"/sessions/v1/{quote(seat.id, safe='')}")

    def seat(self, user: str, session: str | None = None, ttl_seconds: int | None = None,
             on_lost: Callable[[Seat], None] | None = None) -> Holding:
        """A context manager: check out on entry, renew in the background, check in on exit."""
        return Holding(self, user, session, ttl_seconds, on_lost)

    # --- HTTP -----------------------------------------------------------------------------
    def _bearer(self) -> str:
        if callable(self._token):
            return self._token()
        if self._token:
            return self._token
        return Path(self._token_file).read_text().strip()

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self._bearer()}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
                return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as error:
            raise _refusal(error) from None
        except (urllib.error.URLError, OSError) as error:
            raise SessionError(0, "Unreachable", f"{self.url}: {getattr(error, 'reason', error)}") from None


def _refusal(error: urllib.error.HTTPError) -> SessionError:
    try:
        body = json.loads(error.read() or b"{}")
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    reason, message = str(body.get("reason", error.reason)), str(body.get("message", error.reason))
    kind = {409: SessionCapExceeded, 404: SessionNotFound}.get(error.code, SessionError)
    if error.code == 409 and reason != "SessionCapExceeded":
        kind = SessionError
    return kind(error.code, reason, message, body)


class Holding:
    """``with client.seat(user) as seat:`` -- the seat, renewed by a daemon thread until exit."""

    def __init__(self, client: SessionClient, user: str, session: str | None, ttl_seconds: int | None,
                 on_lost: Callable[[Seat], None] | None) -> None:
        self.client, self.user, self.session, self.ttl = client, user, session, ttl_seconds
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.seat: Seat | None = None

    def __enter__(self) -> Seat:
        self.seat = self.client.checkout(self.user, self.session, self.ttl)
        self._thread = threading.Thread(target=self._renew, name=f"entitle-seat-{self.seat.id[:8]}", daemon=True)
        self._thread.start()
        return self.seat

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.client.timeout + 1)
        if self.seat is not None and not self.seat.lost.is_set():
            try:
                self.client.checkin(self.seat)
            except SessionError:
                pass        # gone already, or unreachable: it lapses after its ttl

    def _renew(self) -> None:
        seat = self.seat
        assert seat is not None
        period = max(seat.ttl_seconds / 3, 1.0)
        deadline = time.monotonic() + seat.ttl_seconds
        wait = period
        while not self._stop.wait(wait):
            sent = time.monotonic()     # the operator's ttl runs from no earlier than this
            try:
                self.client.heartbeat(seat)
            except SessionNotFound:
                self._lose(seat)
                return
            except SessionError:
                # Transient (unreachable, 5xx, 429): retry soon, while the seat is still ours.
                left = deadline - time.monotonic()
                if left <= 0:
                    self._lose(seat)
                    return
                wait = min(max(period / 4, 0.5), left)
                continue
            deadline = sent + seat.ttl_seconds
            wait = period

    def _lose(self, seat: Seat) -> None:
        seat.lost.set()
        if self.on_lost is not None:
            self.on_lost(seat)
