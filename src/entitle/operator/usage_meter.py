"""Usage records for everything counted -- Workloads and the sourced kinds alike -- and Licenses,
appended to the ledger. The one owner of what this ledger has counted and recorded.

Records are deterministic: the same change always yields the same id, so replays, restarts and
a second replica never duplicate one.

**Billed times are times the operator can prove** (DESIGN "Usage records"): a creation is dated
by the apiserver's ``creationTimestamp``, a deletion by its ``deletionTimestamp``; every other
change at the moment it was first observed, and never earlier than the object's previous record.
Nothing a client writes dates a record: ``managedFields`` entries (and so field managers) are the
author's words -- ``kubectl patch --field-manager=entitle`` once made a scale-down's record look
12 s older than it was.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import datetime
from typing import Any, Callable, Iterable

from entitle.adapters.metering.backends import LedgerBackend
from entitle.adapters.metering.ledger import LedgerWriter
from entitle.api import Workload
from entitle.api.common import format_time, parse_time
from entitle.domain import records
from entitle.domain.licenses import Phase, ReadLicense
from entitle.domain.privacy import pseudonymize_record
from entitle.domain.state import ClusterState
from entitle.domain.usage import footprint
from entitle.operator.tenancy import TenancyHistory


class _Missing:
    """Marks "this ledger has never counted the object" (distinct from None: counted nowhere)."""


MISSING = _Missing()
# Ids this process appended, remembered to skip re-deriving them (the ledger deduplicates too).
APPENDED_MEMORY = 100_000


def claim_key(workload: Workload, table: Any) -> tuple:
    """What a sourced object's record says it claims: a change of it is an ``updated`` record."""
    fp = footprint(workload.spec, table)
    return (fp.instance_kind, fp.units, fp.users, fp.features, tuple(sorted(workload.spec.guests)))


class UsageMeter:
    def __init__(self, state: ClusterState, writer: LedgerWriter, source: str, clock: Callable[[], datetime],
                 revisions: Callable[[Iterable[str]], dict[str, int]], tenancy: TenancyHistory) -> None:
        self.state, self.writer, self.source, self.clock = state, writer, source, clock
        self.revisions, self.tenancy = revisions, tenancy
        # uid -> the tenant the ledger counts the object under (None: moved out to no tenant).
        # Seeded from the ledger's live table at start, so a move while the operator was down
        # is noticed and metered too.
        self.counted: dict[str, str | None] = {}
        # uid -> the highest generation this ledger has a record of (seeded from its live table).
        self.recorded_generation: dict[str, int] = {}
        # uid -> the time of this ledger's newest record of the object (seeded from the live
        # table): no later record is dated before it.
        self.last_record_time: dict[str, datetime] = {}
        # uid -> what a sourced object's last record claimed (see claim_key).
        self.recorded_claim: dict[str, tuple] = {}
        self._appended: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.enabled = True                      # False in a webhook worker: the operator records
        self.pseudonym_key: bytes | None = None  # privacy.pseudonymizeUsers: the HMAC key
        self.cluster: str | None = None          # fleet.cluster: every record says which member wrote it

    def seed(self, ledger: LedgerBackend) -> None:
        """What the ledger already counts (its live table), before any watch event."""
        for uid, body in ledger.iter_live("workload"):
            record = json.loads(body)
            data = record.get("data") or {}
            try:
                self.last_record_time[uid] = parse_time(record.get("time"))
            except (TypeError, ValueError):
                pass
            self.counted[uid] = None if data.get("operation") == "movedOut" else data.get("tenant")
            self.recorded_generation[uid] = int(data.get("generation") or 0)
            if (data.get("kind") or "Workload") != "Workload":
                self.recorded_claim[uid] = claim_key(records.workload_from_record({"data": data}), self.state.table)

    # -- the one way into the ledger ------------------------------------------------------------
    def append(self, record: dict) -> None:
        if not self.enabled:
            return
        # Status ticks and echo events re-derive the same records; skip the ledger transaction
        # (an fsync) for ids this process already appended. The ledger still deduplicates.
        key = (record["source"], record["id"])
        if key in self._appended:
            return
        data = record.get("data") or {}
        if record.get("type") == records.WORKLOAD_TYPE and data.get("uid"):
            uid, generation = data["uid"], int(data.get("generation") or 0)
            if generation > self.recorded_generation.get(uid, 0):
                self.recorded_generation[uid] = generation
            self.last_record_time[uid] = self.not_before_last(uid, parse_time(record["time"]))
        if self.pseudonym_key is not None:
            # The one place every record passes: names never reach the ledger, sinks or exports.
            record = pseudonymize_record(record, self.pseudonym_key)
        if self.cluster is not None and isinstance(record.get("data"), dict):
            # Fleet members: whose usage it is, for per-cluster views of a fleet export (the id,
            # and so deduplication, is unchanged).
            record = {**record, "data": {**record["data"], "cluster": self.cluster}}
        self.writer.submit(record)
        self._appended[key] = None
        if len(self._appended) > APPENDED_MEMORY:
            self._appended.popitem(last=False)

    def _workload_record(self, workload: Workload, operation: str, tenant: str, when: datetime,
                         now: datetime) -> None:
        licenses = self.state.entitlement(tenant, now).licenses
        self.append(records.workload_record(workload, operation, tenant, when, self.state.table, licenses,
                                            self.source, self.revisions(licenses)))

    # -- billed times ---------------------------------------------------------------------------
    def not_before_last(self, uid: str | None, when: datetime) -> datetime:
        """``when``, or the time of the object's previous record if that is later: a record never
        goes back before the one it follows (the meters would bill the change the wrong way)."""
        last = self.last_record_time.get(uid) if uid else None
        return when if last is None or when >= last else last

    def deleted_at(self, uid: str | None, deletion: datetime | None, now: datetime) -> datetime:
        """When a deletion is billed: the apiserver's ``deletionTimestamp`` -- unless the object was
        recorded changing after it (a foreign finalizer kept it, and it was scaled meanwhile): then
        when its end is observed. Never before its previous record."""
        last = self.last_record_time.get(uid) if uid else None
        if deletion is None or (last is not None and last > deletion):
            return self.not_before_last(uid, now)
        return self.not_before_last(uid, deletion)

    # -- Workloads ------------------------------------------------------------------------------
    def record_stored(self, workload: Workload, tenant: str | None, now: datetime,
                      generation: int | None = None) -> None:
        """A stored Workload at ``generation`` (default: its own): ``created`` or ``updated``."""
        if not tenant:
            return
        generation = generation or workload.metadata.generation or 1
        if generation != workload.metadata.generation:
            workload = workload.model_copy(deep=True)
            workload.metadata.generation = generation
        uid = workload.metadata.uid
        if uid and generation <= self.recorded_generation.get(uid, 0):
            # This ledger already has this object at this generation or a later one -- e.g. it
            # entered its tenant by a move (movedIn at generation N): a "created" record now
            # would bill it from its creation, before it belonged to the tenant.
            return
        operation = "created" if generation == 1 else "updated"
        when = (workload.metadata.creation_timestamp or now) if operation == "created" else now
        self._workload_record(workload, operation, tenant, self.not_before_last(uid, when), now)

    def record_gone(self, workload: Workload | None, uid: str | None, namespace_tenant: str | None,
                    now: datetime) -> str | None:
        """The object is gone: its deletion, under the tenant that counted it (the namespace's
        when this ledger never counted it). Returns that tenant when a record was made."""
        counted = self.counted.pop(uid, MISSING) if uid else MISSING
        tenant = namespace_tenant if counted is MISSING else counted
        made = None
        if workload is not None and tenant:
            when = self.deleted_at(uid, workload.metadata.deletion_timestamp, now)
            self._workload_record(workload, "deleted", tenant, when, now)
            made = tenant
        elif uid and counted is None:
            # Counted nowhere (moved out to no tenant): its parked ledger row goes, no record.
            self.writer.forget_live("workload", uid)
        if uid:
            self.recorded_generation.pop(uid, None)
        return made

    def move(self, workload: Workload, tenant: str | None, default: Any = MISSING) -> None:
        """Meter a change of the tenant an object counts under (its namespace's label changed,
        now or while the operator was down): movedOut of the old, movedIn to the new -- dated
        when this process saw the label change (or, noticed at start, now), never before the
        object's previous record."""
        uid = workload.metadata.uid
        if not uid:
            return
        counted = self.counted.get(uid, default)
        if counted is MISSING:
            # Never metered by this ledger: its created/updated records will count it.
            if tenant:
                self.counted[uid] = tenant
            return
        if counted == tenant:
            return
        now = self.clock()
        ns = workload.metadata.namespace or ""
        when = self.not_before_last(uid, self.tenancy.moved_at(ns, now))
        licenses = self.state.entitlement(tenant, now).licenses if tenant else ()
        for record in records.moved_records(workload, counted, tenant, when, self.state.table, licenses,
                                            self.source, self.revisions(licenses),
                                            change=self.tenancy.change_version(ns)):
            self.append(record)
        self.counted[uid] = tenant

    # -- objects of sourced kinds ---------------------------------------------------------------
    def count_claim(self, workload: Workload, tenant: str | None, source_created: datetime | None,
                    now: datetime) -> None:
        """A sourced object counted (again): created, moved in, moved or changed."""
        uid, ns = workload.metadata.uid, workload.metadata.namespace or ""
        if self.counted.get(uid, MISSING) is MISSING and tenant:
            # First time counted by this ledger: created under the source, or it ran before the
            # source (or before its namespace's tenant label) and moves in now.
            start = max([t for t in (source_created,) if t is not None] + [self.tenancy.tenant_since(ns, now)])
            created = workload.metadata.creation_timestamp
            if created is not None and created >= start:
                self._record_claim(workload, tenant, "created", created, now)
            else:
                licenses = self.state.entitlement(tenant, now).licenses
                for record in records.moved_records(workload, None, tenant, start, self.state.table, licenses,
                                                    self.source, self.revisions(licenses)):
                    self.append(record)
                self.recorded_claim[uid] = claim_key(workload, self.state.table)
            self.counted[uid] = tenant
            return
        self.move(workload, tenant)
        if tenant and self.recorded_claim.get(uid) != claim_key(workload, self.state.table):
            self._record_claim(workload, tenant, "updated", now, now)

    def _record_claim(self, workload: Workload, tenant: str, operation: str, when: datetime, now: datetime) -> None:
        self._workload_record(workload, operation, tenant, self.not_before_last(workload.metadata.uid, when), now)
        self.recorded_claim[workload.metadata.uid] = claim_key(workload, self.state.table)

    def stop_claim(self, uid: str, workload: Workload | None, now: datetime) -> str | None:
        """Still there, no longer counted (selector, owner or source changed): it moves out.
        Returns the tenant it counted under."""
        tenant = self.counted.pop(uid, None)
        if workload is not None and tenant:
            when = self.not_before_last(uid, now)
            for record in records.moved_records(workload, tenant, None, when, self.state.table, (), self.source):
                self.append(record)
        self.recorded_claim.pop(uid, None)
        return tenant

    def claim_gone(self, uid: str, workload: Workload, tenant: str, when: datetime, now: datetime) -> None:
        """A counted sourced object's deletion (at its anchor's deletion time, or when observed)."""
        self._workload_record(workload, "deleted", tenant, self.not_before_last(uid, when), now)
        self.counted.pop(uid, None)
        self.recorded_claim.pop(uid, None)

    # -- start-up -------------------------------------------------------------------------------
    def reconcile_vanished(self, ledger: LedgerBackend, present: set[str | None],
                           accounted: Callable[[str, dict], bool]) -> None:
        """Objects the ledger holds as live but the cluster no longer has were deleted while the
        operator was down: record each deletion once (deterministic id), at the time it is
        noticed. ``present``: the Workloads listed; ``accounted(uid, last record)``: a sourced
        object still watched, of a kind entitle cannot list now (absence of evidence is not a
        deletion), or whose deletion its anchor will time."""
        now = self.clock()
        for uid, body in ledger.iter_live("workload"):
            if uid in present and '"kind":"Workload"' in body:
                continue          # the common case, decided without parsing the record
            last = json.loads(body)
            data = last.get("data") or {}
            if (data.get("kind") or "Workload") == "Workload":
                if uid in present:
                    continue
            elif accounted(uid, last):
                continue
            if data.get("operation") == "movedOut":
                self.writer.forget_live("workload", uid)   # counted nowhere when it went
            else:
                self.append(records.vanished_workload_record(last, self.not_before_last(uid, now)))
            self.counted.pop(uid, None)
        for name, last in ledger.live("license").items():
            if name not in self.state.licenses:
                tenant = last["data"]["tenant"]
                self.license_deleted(name, last["data"].get("uid") or name, tenant, now)

    # -- Licenses -------------------------------------------------------------------------------
    def license_deleted(self, name: str, uid: str | None, tenant: str, now: datetime) -> None:
        self.append(records.license_record(name, uid, tenant, "deleted", "deleted", now,
                                           self.state.entitlement(tenant, now), self.source))

    def license_records(self, read: ReadLicense, uid: str | None, body: dict, audit: dict, now: datetime) -> None:
        """A License's activation, update and expiry records (each id derived from what it is
        about: a restart re-deriving one writes the same id, the ledger keeps the first)."""
        name = read.name
        phase = read.phase(now)
        created = parse_time(body["metadata"]["creationTimestamp"]) \
            if body.get("metadata", {}).get("creationTimestamp") else now
        if phase in (Phase.ACTIVE, Phase.GRACE, Phase.EXPIRED):
            start = max(created, read.spec.not_before) if read.spec.not_before else created
            self.append(records.license_record(name, uid, read.tenant, "activated", "activated", start,
                                               self.state.entitlement(read.tenant, start),
                                               self.source, audit if (read.generation or 1) == 1 else None))
        if (read.generation or 1) > 1:
            self.append(records.license_record(name, uid, read.tenant, "updated", read.generation,
                                               now, self.state.entitlement(read.tenant, now), self.source, audit))
        if phase is Phase.EXPIRED:
            end = read.grace_ends
            self.append(records.license_record(name, uid, read.tenant, "expired", format_time(end), end,
                                               self.state.entitlement(read.tenant, end), self.source))
