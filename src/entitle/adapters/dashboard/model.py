"""What the dashboard shows, from what the user may read (no I/O): TenantEntitlement statuses
per namespace, entitle's denial Events, and -- where the user may read them -- Licenses (what
would grant a missing feature) and the usage ledger (every tenant's daily peaks).

One tenant has one TenantEntitlement per namespace, all written from one computation; the
dashboard shows the tenant once, from the namespace whose object was written last."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from entitle.api.common import parse_time
from entitle.domain.feature_graph import Graph, catalogue_of, feature_graph

DENIALS_KEPT = 200          # per namespace: the newest, within the last day
DENIAL_WINDOW = timedelta(days=1)
POOLS = ("instances", "seats", "sessions")


@dataclass
class Denial:
    time: datetime
    namespace: str
    kind: str
    name: str
    reason: str
    message: str


@dataclass
class Dashboard:
    """Everything read so far; ``version`` moves on every change (the page's live updates)."""

    views: dict[str, dict] = field(default_factory=dict)            # namespace -> TenantEntitlement status
    written: dict[str, str] = field(default_factory=dict)           # namespace -> resourceVersion
    denials: dict[str, deque] = field(default_factory=dict)         # namespace -> Denials, oldest first
    licenses: dict[str, dict] | None = None                         # name -> License (None: not readable)
    ledger_days: dict[str, list[dict]] | None = None                # tenant -> daily peaks from the ledger
    version: int = 0
    _grouped: tuple[int, dict[str, list[str]]] | None = None

    def changed(self) -> None:
        self.version += 1

    # --- inputs ------------------------------------------------------------------------------
    def view_event(self, event_type: str, body: dict) -> None:
        meta = body.get("metadata") or {}
        ns = meta.get("namespace")
        if not ns or meta.get("name") != "entitlement":
            return
        if event_type == "DELETED":
            self.views.pop(ns, None)
            self.written.pop(ns, None)
        else:
            status = body.get("status")
            if not isinstance(status, dict) or not isinstance(status.get("tenant"), str) or not status["tenant"]:
                return
            self.views[ns] = status
            self.written[ns] = str(meta.get("resourceVersion") or "")
        self.changed()

    def event_event(self, event_type: str, body: dict, now: datetime) -> None:
        """A core Event: kept when it is entitle's denial, of the last day."""
        if event_type == "DELETED" or body.get("type") != "Warning":
            return
        source = (body.get("source") or {}).get("component")
        if source != "entitle" and body.get("reportingComponent") != "entitle.dev/operator":
            return
        message = str(body.get("message") or "")
        if not message.startswith("denied "):
            return
        try:
            when = parse_time(body.get("lastTimestamp") or body.get("eventTime") or body.get("firstTimestamp"))
        except (TypeError, ValueError):
            return
        if when < now - DENIAL_WINDOW:
            return
        involved = body.get("involvedObject") or {}
        ns = (body.get("metadata") or {}).get("namespace") or involved.get("namespace") or ""
        kept = self.denials.setdefault(ns, deque(maxlen=DENIALS_KEPT))
        kept.append(Denial(when, ns, str(involved.get("kind") or ""), str(involved.get("name") or ""),
                           str(body.get("reason") or ""), message[:1024]))
        self.changed()

    def license_event(self, event_type: str, body: dict) -> None:
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return
        if self.licenses is None:
            self.licenses = {}
        if event_type == "DELETED":
            self.licenses.pop(name, None)
        else:
            self.licenses[name] = body
        self.changed()

    # --- what the pages show -------------------------------------------------------------------
    def tenants(self) -> dict[str, list[str]]:
        """tenant -> its namespaces the user can see (sorted); grouped once per version."""
        if self._grouped is not None and self._grouped[0] == self.version:
            return self._grouped[1]
        out: dict[str, list[str]] = {}
        for ns, status in sorted(self.views.items()):
            out.setdefault(status["tenant"], []).append(ns)
        for tenant in self.ledger_days or {}:
            out.setdefault(tenant, [])
        self._grouped = (self.version, dict(sorted(out.items())))
        return self._grouped[1]

    def status_of(self, tenant: str) -> dict | None:
        namespaces = self.tenants().get(tenant) or []
        if not namespaces:
            return None
        return self.views[max(namespaces, key=lambda ns: _version_key(self.written.get(ns, "")))]

    def denials_of(self, tenant: str, now: datetime) -> list[Denial]:
        since = now - DENIAL_WINDOW
        out = [d for ns in self.tenants().get(tenant) or [] for d in self.denials.get(ns, ()) if d.time >= since]
        return sorted(out, key=lambda d: d.time, reverse=True)

    def graph_of(self, tenant: str) -> Graph:
        status = self.status_of(tenant) or {}
        catalogue = None
        if self.licenses:
            catalogue = catalogue_of([((lic.get("metadata") or {}).get("name", ""), (lic.get("spec") or {}).get("edition"),
                                       [f.get("name") for f in (lic.get("spec") or {}).get("features") or []
                                        if isinstance(f, dict) and isinstance(f.get("name"), str)])
                                      for lic in self.licenses.values()])
        return feature_graph(status.get("features") or [], catalogue)

    def days_of(self, tenant: str) -> list[dict]:
        """The daily peaks: the ledger's where given (every tenant), else the TenantEntitlement's."""
        if self.ledger_days is not None and tenant in self.ledger_days:
            return self.ledger_days[tenant]
        return list((self.status_of(tenant) or {}).get("history") or [])


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (-1, version)
