"""Capacity holds shared by every webhook replica: one ConfigMap per tenant, updated with a
resourceVersion precondition — the ResourceQuota pattern (see docs/admission-concurrency.md).

An admission that raises a tenant's usage is allowed only once its hold is written with the
resourceVersion it was decided against. Two replicas deciding on the same headroom cannot both
write: the second gets 409 Conflict, re-reads, decides again with the first one's hold counted,
and is denied if nothing is left. Holds expire after a TTL longer than any webhook call plus
the watch lag, by which time the admitted object is stored and counted from the watch.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import orjson

from entitle.domain.escrow import Grant
from entitle.domain.state import Reservation
from entitle.domain.usage import Footprint

LABEL = "entitle.dev/holds"
Key = tuple[str, str]


class HoldConflict(Exception):
    """The tenant's hold object changed since it was read (or appeared meanwhile)."""


def tenant_object_name(prefix: str, tenant: str) -> str:
    """A valid ConfigMap name for any tenant label value (which may hold '_' or capitals)."""
    slug = re.sub(r"[^a-z0-9-]", "-", tenant.lower()).strip("-")[:40] or "tenant"
    return f"{prefix}-{slug}-{hashlib.sha256(tenant.encode()).hexdigest()[:8]}"


def object_name(tenant: str) -> str:
    return tenant_object_name("entitle-holds", tenant)


class HoldsCorrupt(ValueError):
    """The hold object's content cannot be read (edited by hand, truncated, another version)."""


@dataclass
class Holds:
    tenant: str
    resource_version: str | None                 # None: the object does not exist yet
    entries: dict[Key, Reservation]
    # Set when the stored object could not be read: what is wrong with it. Nobody can know
    # what it reserved, so raising admissions wait until any hold in it would have expired,
    # then the object is replaced (see SharedAdmission).
    corrupt: str | None = None
    # Escrow grants of every replica (domain.escrow): headroom reserved, spent in memory.
    grants: list[Grant] | None = None

    def live_grants(self, wall: datetime) -> list[Grant]:
        return [g for g in self.grants or () if g.expires is not None and g.expires > wall]


def _encode(entries: dict[Key, Reservation]) -> str:
    # Every hold write carries the whole map, so its size is each admission's cost: defaults
    # are left out (container kind, known kind, no users, no features) and orjson encodes.
    out = {}
    for (ns, name), h in entries.items():
        fp = h.footprint
        item: dict = {"r": fp.replicas, "u": fp.units, "e": round(h.expires.timestamp(), 3), "id": h.uid,
                      "g": h.generation}
        if fp.instance_kind != "container":
            item["k"] = fp.instance_kind
        if not fp.known_kind:
            item["x"] = False
        if fp.users:
            item["s"] = sorted(fp.users)
        if fp.features:
            item["f"] = sorted(fp.features)
        out[f"{ns}/{name}"] = item
    return orjson.dumps(out).decode()


def _decode(text: str | None) -> dict[Key, Reservation]:
    try:
        raw = orjson.loads(text) if text else {}
        if not isinstance(raw, dict):
            raise HoldsCorrupt(f"expected a JSON object, found {type(raw).__name__}")
        out = {}
        for key, v in raw.items():
            ns, name = key.split("/", 1)
            fp = Footprint(str(v.get("k", "container")), int(v["r"]), int(v["u"]), frozenset(map(str, v.get("s", ()))),
                           frozenset(map(str, v.get("f", ()))), bool(v.get("x", True)))
            out[(ns, name)] = Reservation(fp, datetime.fromtimestamp(float(v["e"]), timezone.utc), v.get("id"),
                                          v.get("g"))
        return out
    except HoldsCorrupt:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, OSError) as exc:
        raise HoldsCorrupt(f"{type(exc).__name__}: {str(exc)[:200]}") from None


def encode_grants(grants: list[Grant]) -> str:
    return orjson.dumps([{"r": g.replica, "i": g.id, "u": g.units, "s": g.seats, "f": g.features,
                          "e": round(g.expires.timestamp(), 3), "b": g.basis,
                          **({"l": g.lapse} if g.lapse is not None else {})} for g in grants]).decode()


def _lapse(value: Any) -> float | None:
    """A grant's lapse in seconds; absent, not a number or absurd: None (counted until expiry,
    which is never less safe)."""
    if value is None or isinstance(value, bool):
        return None
    seconds = float(value)
    return seconds if 0 < seconds < 86400 else None


def decode_grants(text: str | None) -> list[Grant]:
    try:
        raw = orjson.loads(text) if text else []
        if not isinstance(raw, list):
            raise HoldsCorrupt(f"grants: expected a list, found {type(raw).__name__}")
        out = []
        for g in raw:
            units, seats = g.get("u"), g.get("s")
            features = {str(k): int(v) for k, v in (g.get("f") or {}).items()}
            out.append(Grant(str(g["r"]), str(g["i"]), None if units is None else int(units),
                             None if seats is None else int(seats), features,
                             datetime.fromtimestamp(float(g["e"]), timezone.utc), str(g.get("b", "")),
                             lapse=_lapse(g.get("l"))))
        return out
    except HoldsCorrupt:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, OSError) as exc:
        raise HoldsCorrupt(f"grants: {type(exc).__name__}: {str(exc)[:200]}") from None


def read_holds(tenant: str, resource_version: str | None, text: str | None, grants: str | None = None) -> Holds:
    """The holds and grants in an object's data, or a :class:`Holds` marked ``corrupt`` (never raises)."""
    try:
        return Holds(tenant, resource_version, _decode(text), grants=decode_grants(grants))
    except HoldsCorrupt as exc:
        return Holds(tenant, resource_version, {}, corrupt=str(exc))


class HoldStore(Protocol):
    """Where the tenants' holds and grants live, read and written by compare-and-swap: the
    apiserver's ConfigMaps (:class:`AsyncHoldStore`), or memory in tests (:class:`MemoryHoldStore`)."""

    async def read(self, tenant: str) -> Holds:
        """The tenant's holds and grants now (``resource_version`` None: no object yet)."""

    async def write(self, holds: Holds, entries: dict[Key, Reservation], grants: list[Grant] | None = None) -> Holds:
        """Replace them, if the object is still at ``holds.resource_version``; else
        :class:`HoldConflict`."""


class MemoryHoldStore:
    """The same compare-and-swap contract in memory, for tests (what two replicas share). Each
    call gives the event loop back once, as a request to the apiserver would."""

    def __init__(self) -> None:
        import threading

        self._objects: dict[str, tuple[int, dict]] = {}
        self._lock = threading.Lock()
        self.conflicts = 0
        self.writes = 0

    async def read(self, tenant: str) -> Holds:
        import asyncio

        await asyncio.sleep(0)
        return self.peek(tenant)

    async def write(self, holds: Holds, entries: dict, grants: list[Grant] | None = None) -> Holds:
        import asyncio

        await asyncio.sleep(0)
        return self.put(holds, entries, grants)

    def peek(self, tenant: str) -> Holds:
        """What the store holds now (a test's look, outside the contract)."""
        with self._lock:
            if tenant not in self._objects:
                return Holds(tenant, None, {})
            version, entries, *rest = self._objects[tenant]
            if isinstance(entries, str):   # raw (corrupted) content, see corrupt()
                return read_holds(tenant, str(version), entries)
            return Holds(tenant, str(version), dict(entries), grants=list(rest[0]) if rest else [])

    def corrupt(self, tenant: str, text: str) -> None:
        """Replace the tenant's object content by ``text`` (as a careless edit would)."""
        with self._lock:
            version = self._objects[tenant][0] + 1 if tenant in self._objects else 1
            self._objects[tenant] = (version, text)

    def put(self, holds: Holds, entries: dict, grants: list[Grant] | None = None) -> Holds:
        with self._lock:
            current = self._objects.get(holds.tenant)
            current_version = None if current is None else str(current[0])
            if current_version != holds.resource_version:
                self.conflicts += 1
                raise HoldConflict(holds.tenant)
            version = 1 if current is None else current[0] + 1
            self.writes += 1
            self._objects[holds.tenant] = (version, dict(entries), list(grants or []))
            return Holds(holds.tenant, str(version), dict(entries), grants=list(grants or []))


class AsyncHoldStore:
    """Reads and compare-and-swaps the hold ConfigMaps in the operator's namespace, on the
    webhook's own event loop (``AsyncApi``): no thread hop and none of the generated client's
    per-call model (de)serialization."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.api = api
        self.namespace = namespace

    def _path(self, tenant: str | None = None) -> str:
        base = f"api/v1/namespaces/{self.namespace}/configmaps"
        return f"{base}/{object_name(tenant)}" if tenant else base

    async def read(self, tenant: str) -> Holds:
        status, cm = await self.api.request("GET", self._path(tenant), ok=(200, 404))
        if status == 404:
            return Holds(tenant, None, {})
        data = cm.get("data") if isinstance(cm.get("data"), dict) else {}
        return read_holds(tenant, cm["metadata"]["resourceVersion"], data.get("holds"), data.get("grants"))

    async def write(self, holds: Holds, entries: dict[Key, Reservation], grants: list[Grant] | None = None) -> Holds:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": object_name(holds.tenant), "namespace": self.namespace,
                             "labels": {LABEL: "true"}, "annotations": {"entitle.dev/tenant": holds.tenant}},
                "data": {"holds": _encode(entries), "grants": encode_grants(grants or [])}}
        if holds.resource_version is None:
            method, path = "POST", self._path()
        else:
            body["metadata"]["resourceVersion"] = holds.resource_version
            method, path = "PUT", self._path(holds.tenant)
        status, cm = await self.api.request(method, path, body, ok=(200, 201, 409) + ((404,) if method == "PUT" else ()))
        if status in (404, 409):  # changed, appeared, or vanished since it was read
            raise HoldConflict(holds.tenant)
        return Holds(holds.tenant, cm["metadata"]["resourceVersion"], entries, grants=list(grants or []))
