"""Where a tenant's session book lives: one ConfigMap per tenant in the operator's namespace
(``entitle-sessions-...``), read and replaced by compare-and-swap on its resourceVersion -- the
pattern of the admission holds (adapters/kube/holds.py), so two replicas never both write a
book decided against the same version. :class:`MemorySessionStore` is the same contract in
memory for unit tests.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Protocol

import orjson

from entitle.adapters.kube.cas_configmap import CasConflict, ConfigMapCas, MemoryCas
from entitle.adapters.kube.holds import tenant_object_name
from entitle.domain.sessions import Book, Ended, Session

LABEL = "entitle.dev/sessions"


class SessionConflict(Exception):
    """The tenant's session object changed since it was read (or appeared, or vanished)."""


def object_name(tenant: str) -> str:
    return tenant_object_name("entitle-sessions", tenant)


def _t(moment: datetime) -> float:
    return round(moment.timestamp(), 3)


def _time(value: Any) -> datetime:
    return datetime.fromtimestamp(float(value), timezone.utc)


def encode(book: Book) -> dict[str, str]:
    live = {sid: {"u": s.user, "s": _t(s.since), "r": _t(s.renewed), "t": s.ttl, "n": s.renewals,
                  **({"k": s.key} if s.key is not None else {})} for sid, s in book.live.items()}
    ended = {sid: {"u": e.user, "s": _t(e.since), "a": _t(e.at), "o": e.operation} for sid, e in book.ended.items()}
    return {"sessions": orjson.dumps(live).decode(), "ended": orjson.dumps(ended).decode()}


def decode(tenant: str, version: str | None, data: dict | None) -> Book:
    """The book in an object's data, or one marked ``corrupt`` (never raises): a hand-edited
    object must not take the endpoint down; check-outs then wait for it to be replaced."""
    try:
        data = data if isinstance(data, dict) else {}
        live_raw = orjson.loads(data.get("sessions") or "{}")
        ended_raw = orjson.loads(data.get("ended") or "{}")
        if not isinstance(live_raw, dict) or not isinstance(ended_raw, dict):
            raise ValueError("sessions and ended must be JSON objects")
        live = {str(sid): Session(str(sid), str(v["u"]), _time(v["s"]), _time(v["r"]), int(v["t"]), int(v.get("n", 0)),
                                  None if v.get("k") is None else str(v["k"])) for sid, v in live_raw.items()}
        for s in live.values():
            if not 0 < s.ttl <= 86_400:
                raise ValueError(f"session {s.id[:40]}: ttl {s.ttl} out of range")
        ended = {str(sid): Ended(str(sid), str(v["u"]), _time(v["s"]), _time(v["a"]), str(v["o"]))
                 for sid, v in ended_raw.items()}
        return Book(tenant, version, live, ended)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, OSError) as exc:
        return Book(tenant, version, corrupt=f"{type(exc).__name__}: {str(exc)[:200]}")


class SessionStore(Protocol):
    async def read(self, tenant: str) -> Book:
        """The tenant's book now (``version`` None: no object yet)."""

    async def write(self, book: Book) -> Book:
        """Store ``book`` if the object is still at ``book.version``; else :class:`SessionConflict`."""


class _Books:
    """Books over a compare-and-swap object store (adapters/kube/cas_configmap)."""

    def __init__(self, cas: Any) -> None:
        self.cas = cas

    async def read(self, tenant: str) -> Book:
        version, data = await self.cas.read(tenant)
        return Book(tenant, None) if version is None else decode(tenant, version, data)

    async def write(self, book: Book) -> Book:
        try:
            version = await self.cas.write(book.tenant, book.version, encode(book))
        except CasConflict:
            raise SessionConflict(book.tenant) from None
        return Book(book.tenant, version, dict(book.live), dict(book.ended))

    async def list(self) -> list[tuple[str, Book]]:
        """Every tenant's book (``(tenant, book)``), for the recorder's start and its resyncs."""
        return [(tenant, decode(tenant, version, data)) for tenant, version, data in await self.cas.list()]


class AsyncSessionStore(_Books):
    def __init__(self, api: Any, namespace: str) -> None:
        super().__init__(ConfigMapCas(api, namespace, "entitle-sessions", LABEL))


class MemorySessionStore(_Books):
    """The same compare-and-swap contract in memory (what two replicas share in a unit test)."""

    def __init__(self) -> None:
        super().__init__(MemoryCas())

    @property
    def writes(self) -> int:
        return self.cas.writes

    @property
    def conflicts(self) -> int:
        return self.cas.conflicts
