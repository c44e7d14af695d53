"""License watch events into the state, the ledger and status: a License is read by the engine
(an unreadable one grants nothing and says why), its burst clocks are seeded from its status,
and its activation, update, expiry and deletion are recorded."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable

from pydantic import ValidationError

from entitle.api import License
from entitle.api.objects import first_error, metadata
from entitle.domain.bursts import BurstClock, plausible
from entitle.domain.licenses import invalid_license
from entitle.domain.state import ClusterState
from entitle.operator.boundary import ErrorBoundary
from entitle.operator.license_records import LicenseRecords
from entitle.operator.license_specs import LicenseSpecs
from entitle.operator.marks import StatusMarks
from entitle.operator.revisions import LicenseRevisions
from entitle.operator.status import StatusWriter
from entitle.operator.usage_meter import UsageMeter

log = logging.getLogger("entitle.controller")


class LicenseWatch:
    def __init__(self, state: ClusterState, specs: LicenseSpecs, marks: StatusMarks, meter: UsageMeter,
                 records: LicenseRecords, revisions: LicenseRevisions, status: StatusWriter, boundary: ErrorBoundary,
                 clock: Callable[[], datetime]) -> None:
        self.state, self.specs, self.marks, self.meter, self.records = state, specs, marks, meter, records
        self.revisions, self.status, self.boundary, self.clock = revisions, status, boundary, clock

    def on_license(self, body: dict[str, Any], deleted: bool = False) -> None:
        self.boundary.guard("License", body, self._on_license, deleted)

    def reread_bound(self) -> None:
        """Licenses bound to a cluster are decided again once this cluster's id is known/changed."""
        for name, known in self.specs.items():
            spec = known.body.get("spec") or {}
            if isinstance(spec, dict) and spec.get("clusterID"):
                self._on_license(known.body, deleted=False)

    def _on_license(self, body: dict[str, Any], deleted: bool) -> None:
        meta = metadata(body)
        name = meta.get("name")
        now = self.clock()
        if deleted:
            self._deleted(name, meta, now)
            return
        self.status.license_seen(name, body.get("status"))
        try:
            lic = License.model_validate(body)
        except ValidationError as exc:
            # Unreadable (e.g. stored before the CRD had its bounds): it grants nothing, and
            # its status and an Event say why. Only its own tenant is affected.
            reason = f"spec not readable: {first_error(exc)}"
            spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
            tenant = spec.get("tenant") if isinstance(spec.get("tenant"), str) else ""
            log.error("license %s is not valid: %s", name, reason)
            read = self.state.set_read_license(invalid_license(name, tenant, meta.get("generation"), reason))
            self.specs.seen(name, meta.get("uid"), body)
            self.marks.tenant(read.tenant)
            return
        if lic.spec.fleet:
            # A fleet License grants through member clusters' leases (docs/fleet.md), never in
            # the cluster that stores it: here it is as if absent (were it local once: gone).
            if name in self.state.licenses:
                self._deleted(name, meta, now)
            log.info("license %s is a fleet License: counted by the fleet's members, not here", name)
            return
        read = self.state.set_license(lic)
        self.marks.unreadable.pop(("License", None, name), None)
        self.specs.seen(name, lic.metadata.uid, body)
        self.revisions.note_status(name, body)
        self.status.license_conditions_seen(name, [c.model_dump(by_alias=True, mode="json") for c in
                                                   (lic.status.conditions if lic.status else [])])
        if lic.status is not None:
            self._seed_bursts(read.tenant, lic)
        self.records(name, now)
        self.marks.tenant(read.tenant)

    def _deleted(self, name: str, meta: dict, now: datetime) -> None:
        read = self.state.delete_license(name)
        self.marks.unreadable.pop(("License", None, name), None)
        self.status.license_gone(name)
        if read is not None:
            self.meter.license_deleted(name, meta.get("uid"), read.tenant, now)
            self.marks.tenant(read.tenant)
        self.revisions.forget(name)
        # (Forgotten, so a later change of the cluster's id never re-reads a deleted License.)
        self.specs.forget(name)

    def _seed_bursts(self, tenant: str, lic: License) -> None:
        status, now = lic.status, self.clock()
        for pool in ("instances", "seats", "sessions"):
            ps = getattr(status, pool)
            if ps is not None and status.burst_month:
                clock = BurstClock(status.burst_month, ps.burst_used_seconds, ps.over_since)
                if not plausible(clock, now):
                    # A status is not proof (DESIGN "Integrity against the tenant"): a future month
                    # would reset the budget. Ignored; this replica counts the budget itself.
                    log.warning("license %s: ignoring an implausible %s burst budget in its status (month %s, "
                                "used %ss, over since %s)", lic.metadata.name, pool, clock.month,
                                clock.used_seconds, clock.over_since)
                    continue
                self.state.seed_burst(tenant, pool, clock)
