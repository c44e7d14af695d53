"""``TenantEntitlement`` objects, one per tenant namespace, written by the leader (DESIGN
"Tenant view").

The status is ``domain.tenant_view`` of the tenant, computed once per tenant pass and written
to each of its namespaces whose stored status differs (burst seconds compared at minute
resolution, like License status). Created when a namespace gets its tenant label; deleted when
the label goes (or changes to no tenant); a namespace's deletion takes its object with it.

Once per leadership term the existing objects are listed, so a label removed while no leader ran
still loses its object, and unchanged statuses are not rewritten by a new leader. A write that
fails (a namespace being terminated, say) is that namespace's alone: it is retried on the
tenant's next pass and never makes the other status writes start over.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable

from entitle.adapters.kube.async_api import ApiError
from entitle.adapters.kube.client import FIELD_MANAGER
from entitle.api import GROUP, VERSION
from entitle.api.tenant import TENANT_ENTITLEMENT_NAME
from entitle.domain.notices import notices
from entitle.domain.state import ClusterState
from entitle.domain.status import merge_patch, merged
from entitle.domain.tenant_view import tenant_view
from entitle.operator.marks import StatusMarks
from entitle.operator.notices import Notices
from entitle.api.objects import metadata

log = logging.getLogger("entitle.controller")

PLURAL = "tenantentitlements"


def _comparable(status: Any) -> Any:
    """A status as stored: nulls dropped (the apiserver prunes them), burst seconds in minutes."""
    if isinstance(status, list):
        return [_comparable(v) for v in status]
    if not isinstance(status, dict):
        return status
    return {k: (int(v // 60) if k in ("burstUsedSeconds", "burstLeftSeconds") else _comparable(v))
            for k, v in status.items() if v is not None}


class TenantViews:
    def __init__(self, state: ClusterState, marks: StatusMarks, notices: Notices,
                 revision_numbers: Callable[[], dict[str, int]], api: Any) -> None:
        self.state, self.marks, self.notices, self.revision_numbers, self.api = \
            state, marks, notices, revision_numbers, api
        self._stored: dict[str, dict] = {}   # namespace -> status as stored (or last written)
        # namespace -> the status last queued for writing: a tenant pass that computes the same
        # view again queues nothing, even before the queued write went out (like License status).
        self._queued: dict[str, dict] = {}
        # tenant -> its view's conditions as last stored or queued: the memory of lifecycle
        # notices (domain.notices), one per tenant however many namespaces it has.
        self._conditions: dict[str, list[dict]] = {}
        # tenant -> its daily peaks as last stored or queued (domain.history), one per tenant.
        self._history: dict[str, list[dict]] = {}
        self._listed = False
        # Fleet mode: tenant -> its fleet totals (operator.fleet.FleetMember.view), or None.
        self.fleet_view: Callable[[str], dict | None] = lambda tenant: None

    def lost_leadership(self) -> None:
        self._stored.clear()
        self._queued.clear()
        self._conditions.clear()
        self._history.clear()
        self._listed = False

    def namespace_gone(self, namespace: str) -> None:
        """Its TenantEntitlement went with it."""
        self._stored.pop(namespace, None)
        self._queued.pop(namespace, None)

    async def list(self) -> None:
        """Leader, once per term: what exists, so stale ones go and unchanged ones stay."""
        if self._listed:
            return
        _, listing = await self.api.request("GET", f"apis/{GROUP}/{VERSION}/{PLURAL}")
        for item in (listing or {}).get("items") or []:
            meta = metadata(item)
            ns = meta.get("namespace")
            if meta.get("name") != TENANT_ENTITLEMENT_NAME or not ns:
                continue
            status = item.get("status") if isinstance(item.get("status"), dict) else {}
            self._stored[ns] = status
            if isinstance(status.get("tenant"), str) and isinstance(status.get("conditions"), list):
                self._conditions.setdefault(status["tenant"], status["conditions"])
            if isinstance(status.get("tenant"), str) and isinstance(status.get("history"), list):
                # Several namespaces of one tenant: the longest memory wins.
                known = self._history.get(status["tenant"])
                if known is None or len(status["history"]) > len(known):
                    self._history[status["tenant"]] = status["history"]
            if self.state.tenant_of(ns) is None:
                self.marks.namespaces.add(ns)   # its tenant label went while no leader ran
        self._listed = True

    def writes(self, tenant: str, ent: Any, usage: Any, bursts: dict, now: datetime) -> list[tuple]:
        """The tenant's views to write (one per namespace whose stored view differs)."""
        namespaces = sorted(ns for ns, t in self.state.namespaces.items() if t == tenant)
        if not namespaces:
            return []
        if not self._listed:
            # Without what is stored, every view would be rewritten and every notice repeated;
            # the listing is retried on every tick and all tenants are refreshed every 10th.
            return []
        writes: list[tuple] = []
        before = self._conditions.get(tenant, [])
        status = tenant_view(tenant, ent, usage, bursts, self.state.licenses_of(tenant), self.revision_numbers(),
                             now, before, self._history.get(tenant), self.fleet_view(tenant))
        self._history[tenant] = status["history"]
        if _comparable(before) != _comparable(status["conditions"]):
            self.notices.report(notices(before, status["conditions"], tenant, "TenantEntitlement", tenant, now),
                                namespaces=namespaces)
            self._conditions[tenant] = status["conditions"]
        for ns in namespaces:
            known = self._queued.get(ns, self._stored.get(ns))
            if known is not None and _comparable(known) == _comparable(status):
                continue
            self._queued[ns] = status
            writes.append(("tent", (ns, status)))
        return writes

    def untenanted_writes(self, namespace: str) -> list[tuple]:
        self._queued.pop(namespace, None)
        return [("tent-delete", (namespace,))] if namespace in self._stored else []

    async def write(self, kind: str, args: tuple) -> None:
        ns = args[0]
        base = f"apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}"
        try:
            if kind == "tent-delete":
                await self.api.request("DELETE", f"{base}/{TENANT_ENTITLEMENT_NAME}", ok=(200, 202, 404))
                self._stored.pop(ns, None)
                return
            status = args[1]
            if ns not in self._stored:
                await self.api.request("POST", base, {
                    "apiVersion": f"{GROUP}/{VERSION}", "kind": "TenantEntitlement",
                    "metadata": {"name": TENANT_ENTITLEMENT_NAME, "namespace": ns,
                                 "labels": {"app.kubernetes.io/managed-by": "entitle"}}}, ok=(200, 201, 409))
            stored = self._stored.get(ns)
            patch = merge_patch(stored, status)
            code, _ = await self.api.request(
                "PATCH", f"{base}/{TENANT_ENTITLEMENT_NAME}/status", {"status": patch},
                content_type="application/merge-patch+json", params={"fieldManager": FIELD_MANAGER}, ok=(200, 404))
            if code == 404:   # deleted under us: created again on the tenant's next pass
                self._stored.pop(ns, None)
                self._queued.pop(ns, None)
                self.marks.tenant(status["tenant"])
                return
            self._stored[ns] = merged(stored, patch)
        except ApiError as exc:
            # This namespace's alone (terminating, say): retried on the tenant's next pass.
            self._stored.pop(ns, None)
            self._queued.pop(ns, None)
            if kind == "tent":
                self.marks.tenant(args[1]["tenant"])
            else:
                self.marks.namespaces.add(ns)
            log.info("tenant view in %s not written: %s", ns, exc)
