"""One object per tenant, replaced only by compare-and-swap on its resourceVersion: the store
under the session books (adapters/kube/sessions) and the fleet lease books in the hub
(adapters/kube/fleet_leases). :class:`MemoryCas` is the same contract in memory for unit tests.

A create is a POST (409 if someone created it first), a replace a PUT carrying the version read
(409 if it moved on, 404 if it was deleted): both are :class:`CasConflict`, and the caller reads
again and re-decides -- never two writers deciding against the same version."""

from __future__ import annotations

import asyncio
from typing import Any

from entitle.adapters.kube.holds import tenant_object_name


class CasConflict(Exception):
    """The object changed since it was read (or appeared, or vanished)."""


class ConfigMapCas:
    def __init__(self, api: Any, namespace: str, prefix: str, label: str) -> None:
        self.api, self.namespace, self.prefix, self.label = api, namespace, prefix, label

    def name(self, tenant: str) -> str:
        return tenant_object_name(self.prefix, tenant)

    def _path(self, tenant: str | None = None) -> str:
        base = f"api/v1/namespaces/{self.namespace}/configmaps"
        return f"{base}/{self.name(tenant)}" if tenant else base

    async def read(self, tenant: str) -> tuple[str | None, dict | None]:
        """(version, data) now; (None, None): no object yet."""
        status, cm = await self.api.request("GET", self._path(tenant), ok=(200, 404))
        if status == 404:
            return None, None
        return cm["metadata"]["resourceVersion"], cm.get("data")

    async def write(self, tenant: str, version: str | None, data: dict[str, str]) -> str:
        """Store ``data`` if the object is still at ``version``: the new version, or :class:`CasConflict`."""
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": self.name(tenant), "namespace": self.namespace,
                             "labels": {self.label: "true"}, "annotations": {"entitle.dev/tenant": tenant}},
                "data": data}
        if version is None:
            method, path = "POST", self._path()
        else:
            body["metadata"]["resourceVersion"] = version
            method, path = "PUT", self._path(tenant)
        status, cm = await self.api.request(method, path, body, ok=(200, 201, 409) + ((404,) if method == "PUT" else ()))
        if status in (404, 409):
            raise CasConflict(tenant)
        return cm["metadata"]["resourceVersion"]

    async def list(self) -> list[tuple[str, str, dict | None]]:
        """(tenant, version, data) of every object of this kind."""
        _, listing = await self.api.request("GET", self._path(), params={"labelSelector": f"{self.label}=true"})
        out = []
        for cm in listing.get("items") or ():
            tenant = ((cm.get("metadata") or {}).get("annotations") or {}).get("entitle.dev/tenant")
            if tenant:
                out.append((tenant, cm["metadata"]["resourceVersion"], cm.get("data")))
        return out


class MemoryCas:
    """The same contract in memory (what two replicas, or two members, share in a unit test)."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[int, dict]] = {}
        self.writes = self.conflicts = 0

    async def read(self, tenant: str) -> tuple[str | None, dict | None]:
        await asyncio.sleep(0)
        if tenant not in self._objects:
            return None, None
        version, data = self._objects[tenant]
        return str(version), dict(data)

    async def write(self, tenant: str, version: str | None, data: dict[str, str]) -> str:
        await asyncio.sleep(0)
        current = self._objects.get(tenant)
        if (None if current is None else str(current[0])) != version:
            self.conflicts += 1
            raise CasConflict(tenant)
        new = 1 if current is None else current[0] + 1
        self._objects[tenant] = (new, dict(data))
        self.writes += 1
        return str(new)

    async def list(self) -> list[tuple[str, str, dict | None]]:
        return [(t, str(v), dict(d)) for t, (v, d) in self._objects.items()]
