"""When a License's records are written: once its current spec's revision number is known (the
records carry it), at every License event and every status pass (time-driven transitions:
activation at notBefore, expiry after grace)."""

from __future__ import annotations

from datetime import datetime

from entitle.domain.revisions import audit_of
from entitle.domain.state import ClusterState
from entitle.operator.license_specs import LicenseSpecs
from entitle.operator.revisions import LicenseRevisions
from entitle.operator.usage_meter import UsageMeter


class LicenseRecords:
    def __init__(self, state: ClusterState, specs: LicenseSpecs, revisions: LicenseRevisions,
                 meter: UsageMeter) -> None:
        self.state, self.specs, self.revisions, self.meter = state, specs, revisions, meter

    def __call__(self, name: str, now: datetime) -> None:
        read, known = self.state.licenses.get(name), self.specs.get(name)
        if read is None or known is None:
            return
        ready, revision = self.revisions.for_records(name)
        if not ready:
            return
        audit = {**audit_of(known.body).as_data(), **({"revision": revision[1]} if revision else {})}
        self.meter.license_records(read, known.uid, known.body, audit, now)
