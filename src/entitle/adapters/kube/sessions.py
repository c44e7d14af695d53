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


class AsyncSessionStore:
    def __init__(self, api: Any, namespace: str) -> None:
        self.api, self.namespace = api, namespace

    def _path(self, tenant: str | None = None) -> str:
        base = f"api/v1/namespaces/{self.namespace}/configmaps"
        return f"{base}/{object_name(tenant)}" if tenant else base

    async def read(self, tenant: str) -> Book:
        status, cm = await self.api.request("GET", self._path(tenant), ok=(200, 404))
        if status == 404:
            return Book(tenant, None)
        return decode(tenant, cm["metadata"]["resourceVersion"], cm.get("data"))

    async def write(self, book: Book) -> Book:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": object_name(book.tenant), "namespace": self.namespace,
                             "labels": {LABEL: "true"}, "annotations": {"entitle.dev/tenant": book.tenant}},
                "data": encode(book)}
        if book.version is None:
            method, path = "POST", self._path()
        else:
            body["metadata"]["resourceVersion"] = book.version
            method, path = "PUT", self._path(book.tenant)
        status, cm = await self.api.request(method, path, body, ok=(200, 201, 409) + ((404,) if method == "PUT" else ()))
        if status in (404, 409):
            raise SessionConflict(book.tenant)
        return Book(book.tenant, cm["metadata"]["resourceVersion"], dict(book.live), dict(book.ended))

    async def list(self) -> list[tuple[str, Book]]:
        """Every tenant's book (``(tenant, book)``), for the recorder's start and its resyncs."""
        _, listing = await self.api.request("GET", self._path(), params={"labelSelector": f"{LABEL}=true"})
        out = []
        for cm in listing.get("items") or ():
            tenant = ((cm.get("metadata") or {}).get("annotations") or {}).get("entitle.dev/tenant")
            if tenant:
                out.append((tenant, decode(tenant, cm["metadata"]["resourceVersion"], cm.get("data"))))
        return out


class MemorySessionStore:
    """The same compare-and-swap contract in memory (what two replicas share in a unit test)."""

    def __init__(self) -> None:
        self._books: dict[str, tuple[int, dict]] = {}
        self.writes = self.conflicts = 0

    async def read(self, tenant: str) -> Book:
        import asyncio

        await asyncio.sleep(0)
        if tenant not in self._books:
            return Book(tenant, None)
        version, data = self._books[tenant]
        return decode(tenant, str(version), data)

    async def write(self, book: Book) -> Book:
        import asyncio

        await asyncio.sleep(0)
        current = self._books.get(book.tenant)
        if (None if current is None else str(current[0])) != book.version:
            self.conflicts += 1
            raise SessionConflict(book.tenant)
        version = 1 if current is None else current[0] + 1
        self._books[book.tenant] = (version, encode(book))
        self.writes += 1
        return Book(book.tenant, str(version), dict(book.live), dict(book.ended))

    async def list(self) -> list[tuple[str, Book]]:
        return [(t, decode(t, str(v), d)) for t, (v, d) in self._books.items()]
