"""Concurrent sessions (floating seats, DESIGN "Concurrent seats"): the pure rules over one
tenant's session book. No I/O: the store (adapters/kube/sessions) reads and compare-and-swaps
the book, the service (operator/sessions) decides with these functions.

**Exactly max.** Every change is a new version of the tenant's one book, written only if the
book is still at the version it was decided against; two replicas deciding on the same last
seat cannot both write. Counting happens on the book being written, so the cap holds at every
version.

**Lapse without trusting clocks.** A session lapses ``ttl`` after its last renewal. Which
renewal is current is a counter (``renewals``) anyone can compare; *when* it happened is
measured by each replica on its own monotonic clock from the moment it first saw that
renewal (:func:`lapsed`). A replica can only see a renewal after it was written, so it never
frees a seat before the holder's ``expiresAt`` -- whatever the replicas' wall clocks say. Wall
times in the book (``since``, ``renewed``) only date records.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from entitle.api import limits
from entitle.domain.bursts import BurstClock
from entitle.domain.checks.pool_cap import pool_verdict
from entitle.domain.entitlement import SessionEntitlement
from entitle.domain.reasons import SESSION_CAP_EXCEEDED

# Ended sessions stay in the book this long (and at most ENDED_KEPT of them) so every
# replica's recorder sees how and when each ended (docs/sessions.md, Records).
ENDED_RETENTION = timedelta(minutes=15)
ENDED_KEPT = 2_000
MAX_USER_LENGTH = limits.MAX_NAME_LENGTH
MAX_KEY_LENGTH = 128


@dataclass(frozen=True)
class Session:
    id: str
    user: str
    since: datetime              # checked out (the writing replica's clock; dates the record)
    renewed: datetime            # last renewal (idem)
    ttl: int                     # seconds
    renewals: int = 0            # bumped on every heartbeat: "a renewal anyone can see"
    key: str | None = None       # the client's own name for the session (idempotent check-out)

    @property
    def expires(self) -> datetime:
        return self.renewed + timedelta(seconds=self.ttl)


@dataclass(frozen=True)
class Ended:
    id: str
    user: str
    since: datetime
    at: datetime
    operation: str               # "checkin" | "lapse"


@dataclass
class Book:
    """One tenant's sessions at one version of its store object."""

    tenant: str
    version: str | None          # None: no object yet
    live: dict[str, Session] = field(default_factory=dict)
    ended: dict[str, Ended] = field(default_factory=dict)
    corrupt: str | None = None


class SessionRefused(Exception):
    """The request is refused with this HTTP status and reason (the numbers in the message)."""

    def __init__(self, status: int, reason: str, message: str, numbers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.numbers = status, reason, message, numbers or {}


def seat_of(session: Session | Ended, per_user: bool) -> str:
    return f"user:{session.user}" if per_user else f"session:{session.id}"


def seats_in_use(live: dict[str, Session], per_user: bool) -> int:
    return len({seat_of(s, per_user) for s in live.values()})


def lapsed(book: Book, first_seen: dict[tuple[str, int], float], monotonic_now: float) -> list[str]:
    """Ids of sessions whose current renewal this replica first saw ``ttl`` or more ago. A
    renewal never seen here (no entry) is not lapsed: it is seen now, by the caller."""
    out = []
    for sid, s in book.live.items():
        seen = first_seen.get((sid, s.renewals))
        if seen is not None and monotonic_now - seen >= s.ttl:
            out.append(sid)
    return out


def end_lapsed(book: Book, ids: list[str]) -> Book:
    """The book with ``ids`` moved to the ended ones, dated at the expiry their holder was told."""
    live, ended = dict(book.live), dict(book.ended)
    for sid in ids:
        s = live.pop(sid, None)
        if s is not None:
            ended[sid] = Ended(sid, s.user, s.since, s.expires, "lapse")
    return replace(book, live=live, ended=ended)


def trim_ended(book: Book, now: datetime) -> Book:
    keep = sorted((e for e in book.ended.values() if e.at > now - ENDED_RETENTION), key=lambda e: (e.at, e.id))
    return replace(book, ended={e.id: e for e in keep[-ENDED_KEPT:]})


def session_ttl(ent: SessionEntitlement, requested: object) -> int:
    """The ttl of a new session: the license's, or a shorter one the client asks for."""
    if requested is None:
        return ent.ttl_seconds
    if isinstance(requested, bool) or not isinstance(requested, int) \
            or not limits.MIN_SESSION_TTL <= requested <= ent.ttl_seconds:
        raise SessionRefused(400, "BadRequest", f"ttlSeconds must be an integer from {limits.MIN_SESSION_TTL} "
                                                f"to the license's {ent.ttl_seconds}")
    return requested


def checkout(book: Book, ent: SessionEntitlement, user: str, key: str | None, ttl: int, new_id: str,
             burst: BurstClock, now: datetime) -> tuple[Book, Session, str | None]:
    """Check a session out for ``user``: (the new book, the session, a burst warning when it
    took a seat above ``max`` within the burst allowance). A
    check-out with the key of a live session of the same user renews that one instead (a
    client's retry never takes a second seat). :class:`SessionRefused` at the cap."""
    if key is not None:
        for s in book.live.values():
            if s.key == key and s.user == user:
                renewed = replace(s, renewed=now, renewals=s.renewals + 1)
                return replace(book, live={**book.live, s.id: renewed}), renewed, None
    shares = ent.per_user and any(s.user == user for s in book.live.values())
    warning = None
    if not shares:
        used = seats_in_use(book.live, ent.per_user)
        denial, warning = pool_verdict(book.tenant, "sessions", ent, used, used + 1, burst, now)
        if denial is None and len(book.live) >= limits.MAX_SESSIONS:
            denial = f"tenant {book.tenant}: {len(book.live)} live sessions, the most one tenant can hold"
        if denial is not None:
            raise SessionRefused(409, SESSION_CAP_EXCEEDED, denial,
                                 {"used": used, "max": ent.max, "burstExtra": ent.burst_extra})
    elif len(book.live) >= limits.MAX_SESSIONS:
        raise SessionRefused(409, SESSION_CAP_EXCEEDED,
                             f"tenant {book.tenant}: {len(book.live)} live sessions, the most one tenant can hold",
                             {"used": seats_in_use(book.live, ent.per_user), "max": ent.max})
    session = Session(new_id, user, now, now, ttl, 0, key)
    return replace(book, live={**book.live, new_id: session}), session, warning


def heartbeat(book: Book, sid: str, now: datetime) -> tuple[Book, Session]:
    s = book.live.get(sid)
    if s is None:
        raise SessionRefused(404, "SessionNotFound", f"no live session {sid[:64]!r} (checked in, lapsed or unknown)")
    renewed = replace(s, renewed=now, renewals=s.renewals + 1)
    return replace(book, live={**book.live, sid: renewed}), renewed


def checkin(book: Book, sid: str, now: datetime) -> Book:
    s = book.live.get(sid)
    if s is None:
        raise SessionRefused(404, "SessionNotFound", f"no live session {sid[:64]!r} (checked in, lapsed or unknown)")
    live = dict(book.live)
    del live[sid]
    return replace(book, live=live, ended={**book.ended, sid: Ended(sid, s.user, s.since, max(now, s.since),
                                                                     "checkin")})


def valid_user(user: object) -> str:
    if not isinstance(user, str) or not user.strip() or len(user) > MAX_USER_LENGTH:
        raise SessionRefused(400, "BadRequest", f"user must be a non-empty string of at most {MAX_USER_LENGTH} "
                                                f"characters")
    return user


def valid_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise SessionRefused(400, "BadRequest", f"session must be a non-empty string of at most {MAX_KEY_LENGTH} "
                                                f"characters")
    return key
