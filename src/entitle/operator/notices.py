"""Lifecycle notices, reported by the leader (DESIGN "Tenant view"; ``domain.notices`` decides).

Each notice is, at once: the condition that changed (written with the status it belongs to),
a Kubernetes Event (on the License; for a tenant's pools on the TenantEntitlement of every
namespace of the tenant, where its team sees it), ``entitle_notices_total{notice}`` and a
``dev.entitle.notice.v1`` record in the ledger (delivered by the sinks; not usage, so export
leaves it out).

Once per crossing: notices are computed against the conditions as stored (a License's from
its watch, a tenant's from the TenantEntitlements listed once per leadership term) and the
memory moves on as soon as a notice is queued, so a later tick, a restart or a new leader
does not repeat it. A leader killed between queueing a notice and writing its condition
repeats it once after the restart (its record then has a second id: the time of the crossing).
"""

from __future__ import annotations

import logging
from typing import Callable

from entitle.api import GROUP, VERSION
from entitle.domain.notices import Notice
from entitle.operator import metrics
from entitle.operator.events import EventQueue

log = logging.getLogger("entitle.controller")

# Bad news that someone should act on; the rest are Normal Events.
WARNING = {"ExpiresIn7Days", "ExpiresIn1Day", "GraceStarted", "UsageAt100Percent", "OverCap", "BurstBudgetUsedUp"}


class Notices:
    def __init__(self, events: EventQueue, append: Callable[[dict], None], source: str) -> None:
        self.events, self.append, self.source = events, append, source

    def report(self, found: list[Notice], uid: str | None = None,
               namespaces: list[str] | tuple[str, ...] = ()) -> None:
        for notice in found:
            metrics.NOTICES.labels(notice=notice.kind).inc()
            event_type = "Warning" if notice.kind in WARNING else "Normal"
            if notice.subject_kind == "License":
                self.events.event("License", notice.subject, None, event_type, notice.kind, notice.message,
                                  notice.time, uid=uid)
            else:
                for ns in namespaces:
                    self.events.event("TenantEntitlement", "entitlement", ns, event_type, notice.kind,
                                      f"tenant {notice.tenant}: {notice.message}", notice.time,
                                      api_version=f"{GROUP}/{VERSION}")
            try:
                self.append(notice.record(self.source, uid))
            except Exception:  # noqa: BLE001 -- a full disk must not stop status (the Event went)
                log.exception("notice %s of %s %s not recorded", notice.kind, notice.subject_kind, notice.subject)
