"""Where a tenant's fleet lease book lives: one ConfigMap per tenant in the hub's fleet namespace
(``entitle-fleet-lease-...``), replaced only by compare-and-swap (adapters/kube/cas_configmap),
as the session books are in each cluster. The book is decided by domain.fleet; this module only
stores it, and reads it defensively: a hand-edited, unreadable object is a ``corrupt`` book
(members then grow nothing and keep within what they hold), never an exception."""

from __future__ import annotations

from typing import Any

import orjson

from entitle.adapters.kube.cas_configmap import CasConflict, ConfigMapCas, MemoryCas
from entitle.domain.fleet import POOLS, Book, Entry

LABEL = "entitle.dev/fleet-lease"
MAX_MEMBERS = 1_000


class LeaseConflict(Exception):
    """The tenant's lease book changed in the hub since it was read."""


def encode(book: Book) -> dict[str, str]:
    return {"leases": orjson.dumps({c: {"amount": e.amount, "floor": e.floor, "renewals": e.renewals,
                                        "period": e.period, "usage": e.usage}
                                    for c, e in sorted(book.entries.items())}).decode()}


def _counts(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError("amount and floor must be objects")
    out = {}
    for pool, n in value.items():
        if pool not in POOLS or isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 2 ** 53:
            raise ValueError(f"{str(pool)[:40]}: not a pool with a non-negative integer")
        out[pool] = n
    return out


def decode(tenant: str, version: str | None, data: dict | None) -> Book:
    try:
        raw = orjson.loads((data or {}).get("leases") or "{}")
        if not isinstance(raw, dict) or len(raw) > MAX_MEMBERS:
            raise ValueError("leases must be an object of at most 1000 clusters")
        entries = {}
        for cluster, v in raw.items():
            period = v["period"]
            if isinstance(period, bool) or not isinstance(period, int) or not 1 <= period <= 86_400:
                raise ValueError(f"cluster {cluster[:60]}: period out of range")
            entries[cluster] = Entry(cluster, _counts(v["amount"]), _counts(v.get("floor", {})), int(v["renewals"]),
                                     period, _counts(v.get("usage", {})))
        return Book(tenant, version, entries)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return Book(tenant, version, corrupt=f"{type(exc).__name__}: {str(exc)[:200]}")


class _Leases:
    def __init__(self, cas: Any) -> None:
        self.cas = cas

    async def read(self, tenant: str) -> Book:
        version, data = await self.cas.read(tenant)
        return Book(tenant) if version is None else decode(tenant, version, data)

    async def write(self, book: Book) -> Book:
        try:
            version = await self.cas.write(book.tenant, book.version, encode(book))
        except CasConflict:
            raise LeaseConflict(book.tenant) from None
        return Book(book.tenant, version, dict(book.entries))

    async def list(self) -> list[Book]:
        return [decode(tenant, version, data) for tenant, version, data in await self.cas.list()]


class HubLeaseStore(_Leases):
    """The books in the hub, through a client of the hub's apiserver (``fleet.hubKubeconfig``)."""

    def __init__(self, hub_api: Any, namespace: str = "entitle-fleet") -> None:
        super().__init__(ConfigMapCas(hub_api, namespace, "entitle-fleet-lease", LABEL))


class MemoryLeaseStore(_Leases):
    def __init__(self) -> None:
        super().__init__(MemoryCas())
