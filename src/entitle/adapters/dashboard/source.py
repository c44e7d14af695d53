"""Reading the cluster for the dashboard, with the user's own credentials (their kubeconfig):
watches of TenantEntitlements, entitle's denial Events and -- when readable -- Licenses, kept in
a :class:`Dashboard`. Cluster-wide where the user may list; otherwise the namespaces given
(``--namespace``, default the kubeconfig context's), each watched on its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from entitle.adapters.dashboard.model import Dashboard
from entitle.adapters.kube.async_api import ApiError
from entitle.adapters.kube.informer import Informer
from entitle.api import GROUP, VERSION

log = logging.getLogger("entitle.dashboard")
DENIAL_EVENTS = "fieldSelector=type%3DWarning%2Csource%3Dentitle"


class NothingReadable(Exception):
    """The credentials may read no TenantEntitlement: neither cluster-wide nor in the namespaces given."""


def _small(body: dict) -> dict:
    return {"metadata": {"uid": (body.get("metadata") or {}).get("uid")}}


class ClusterReader:
    def __init__(self, api: Any, dash: Dashboard, namespaces: list[str], clock: Callable[[], datetime]) -> None:
        self.api, self.dash, self.namespaces, self.clock = api, dash, namespaces, clock
        self.informers: list[Informer] = []
        self.scope = ""

    async def _can_list(self, collection: str) -> bool:
        try:
            await self.api.request("GET", collection, params={"limit": "1"})
            return True
        except ApiError as exc:
            if exc.status in (401, 403, 404):
                return False
            raise

    async def start(self, timeout: float = 30) -> None:
        tents = f"apis/{GROUP}/{VERSION}/tenantentitlements"
        collections: list[tuple[str, Callable[[str, dict], None], Callable[[dict], Any] | None]] = []
        events = lambda kind, body: self.dash.event_event(kind, body, self.clock())  # noqa: E731
        if await self._can_list(tents):
            self.scope = "all namespaces"
            collections += [(tents, self.dash.view_event, None), (f"api/v1/events?{DENIAL_EVENTS}", events, _small)]
        else:
            readable = [ns for ns in self.namespaces
                        if await self._can_list(f"apis/{GROUP}/{VERSION}/namespaces/{ns}/tenantentitlements")]
            if not readable:
                asked = ", ".join(self.namespaces) or "(none: the kubeconfig context names no namespace)"
                raise NothingReadable(f"these credentials may list TenantEntitlements neither cluster-wide nor in "
                                      f"the namespaces asked for: {asked}. Pass --namespace N for a namespace whose "
                                      f"`view` role you hold.")
            self.scope = ", ".join(readable)
            for ns in readable:
                collections.append((f"apis/{GROUP}/{VERSION}/namespaces/{ns}/tenantentitlements",
                                    self.dash.view_event, None))
                if await self._can_list(f"api/v1/namespaces/{ns}/events"):
                    collections.append((f"api/v1/namespaces/{ns}/events?{DENIAL_EVENTS}", events, _small))
        licenses = f"apis/{GROUP}/{VERSION}/licenses"
        if await self._can_list(licenses):
            collections.append((licenses, self.dash.license_event, None))
        for collection, handler, remember in collections:
            self.informers.append(Informer(self.api, collection, on_event=handler, remember=remember,
                                           on_error=lambda exc, c=collection: exc and log.warning("%s: %s", c, exc)
                                           ).start())
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in self.informers)), timeout)

    async def stop(self) -> None:
        for informer in self.informers:
            await informer.stop()
