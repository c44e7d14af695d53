"""Usage records derived from watch events and license transitions, appended to the ledger.

A mixin of :class:`entitle.operator.controller.Controller` (it shares its state, ledger writer
and configuration). Records are deterministic: the same change always yields the same id, so
replays, restarts and a second replica never duplicate one.

**Billed times are times the operator can prove** (DESIGN "Usage records"): a creation is dated
by the apiserver's ``creationTimestamp``, a deletion by its ``deletionTimestamp``; every other
change at the moment it was first observed, and never earlier than the object's previous record.
Nothing a client writes dates a record: ``managedFields`` entries (and so field managers) are the
author's words -- ``kubectl patch --field-manager=entitle`` once made a scale-down's record look
12 s older than it was.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from entitle.domain.privacy import pseudonymize_record
from entitle.api import Workload
from entitle.api.common import format_time, parse_time
from entitle.domain import records
from entitle.domain.licenses import Phase
from entitle.domain.revisions import audit_of


class _Missing:
    """Marks "this ledger has never counted the object" (distinct from None: counted nowhere)."""


MISSING = _Missing()


class RecordKeeping:
    def _not_before_last(self, uid: str | None, when: datetime) -> datetime:
        """``when``, or the time of the object's previous record if that is later: a record never
        goes back before the one it follows (the meters would bill the change the wrong way)."""
        last = self._last_record_time.get(uid) if uid else None
        return when if last is None or when >= last else last

    def _deleted_at(self, uid: str | None, deletion: datetime | None, now: datetime) -> datetime:
        """When a deletion is billed: the apiserver's ``deletionTimestamp`` -- unless the object was
        recorded changing after it (a foreign finalizer kept it, and it was scaled meanwhile): then
        when its end is observed. Never before its previous record."""
        last = self._last_record_time.get(uid) if uid else None
        if deletion is None or (last is not None and last > deletion):
            return self._not_before_last(uid, now)
        return self._not_before_last(uid, deletion)

    def _reconcile_vanished(self, present_uids: set[str | None]) -> None:
        """Objects the ledger holds as live but the cluster no longer has were deleted while the
        operator was down: record each deletion once (deterministic id) -- at its anchor's
        deletion time for a sourced object that has one, else at the time it is noticed.
        ``present_uids``: the Workloads listed; sourced kinds are judged by their informers (a
        kind entitle cannot list now is left alone: absence of evidence is not a deletion)."""
        now = self.now()
        for uid, body in self.ledger.iter_live("workload"):
            if uid in present_uids and '"kind":"Workload"' in body:
                continue          # the common case, decided without parsing the record
            last = json.loads(body)
            data = last.get("data") or {}
            kind = data.get("kind") or "Workload"
            if kind == "Workload":
                if uid in present_uids:
                    continue
            else:
                api_version = data.get("apiVersion") or ""
                group = api_version.split("/")[0] if "/" in api_version else ""
                if uid in self.tracked or not self.kind_listed(group, kind):
                    continue
                if uid in self.anchors and data.get("operation") != "movedOut":
                    self.departed[uid] = (records.workload_from_record(last), last["subject"])
                    anchor_meta = self.anchors[uid].get("metadata") or {}
                    if anchor_meta.get("deletionTimestamp"):
                        self._record_departure(uid, parse_time(anchor_meta["deletionTimestamp"]))
                    continue
            if data.get("operation") == "movedOut":
                self.writer.forget_live("workload", uid)   # counted nowhere when it went
            else:
                self._append(records.vanished_workload_record(last, self._not_before_last(uid, now)))
            self._counted.pop(uid, None)
        for name, last in self.ledger.live("license").items():
            if name not in self.state.licenses:
                tenant = last["data"]["tenant"]
                self._append(records.license_record(name, last["data"].get("uid") or name, tenant, "deleted",
                                                    "deleted", now, self.state.entitlement(tenant, now),
                                                    self.cfg.source))

    def _record_stored(self, workload: Workload, body: dict[str, Any], tenant: str | None, now: datetime,
                       generation: int | None = None) -> None:
        if not tenant:
            return
        generation = generation or workload.metadata.generation or 1
        if generation != workload.metadata.generation:
            workload = workload.model_copy(deep=True)
            workload.metadata.generation = generation
        uid = workload.metadata.uid
        if uid and generation <= self._recorded_generation.get(uid, 0):
            # This ledger already has this object at this generation or a later one -- e.g. it
            # entered its tenant by a move (movedIn at generation N): a "created" record now
            # would bill it from its creation, before it belonged to the tenant.
            return
        operation = "created" if generation == 1 else "updated"
        when = (workload.metadata.creation_timestamp or now) if operation == "created" else now
        when = self._not_before_last(uid, when)
        self._append(records.workload_record(
            workload, operation, tenant, when, self.state.table,
            self.state.entitlement(tenant, now).licenses, self.cfg.source, self.revisions_of(self.state.entitlement(tenant, now).licenses)))

    records_enabled = True   # False in a webhook worker (operator.workers): the operator records
    pseudonym_key: bytes | None = None   # privacy.pseudonymizeUsers: the HMAC key

    def _append(self, record: dict) -> None:
        if not self.records_enabled:
            return
        # Status ticks and echo events re-derive the same records; skip the ledger transaction
        # (an fsync) for ids this process already appended. The ledger still deduplicates.
        key = (record["source"], record["id"])
        if key in self._appended:
            return
        data = record.get("data") or {}
        if record.get("type") == records.WORKLOAD_TYPE and data.get("uid"):
            uid, generation = data["uid"], int(data.get("generation") or 0)
            if generation > self._recorded_generation.get(uid, 0):
                self._recorded_generation[uid] = generation
            self._last_record_time[uid] = self._not_before_last(uid, parse_time(record["time"]))
        if self.pseudonym_key is not None:
            # The one place every record passes: names never reach the ledger, sinks or exports.
            record = pseudonymize_record(record, self.pseudonym_key)
        self.writer.submit(record)
        self._appended[key] = None
        if len(self._appended) > 100_000:
            self._appended.popitem(last=False)

    def _license_records(self, name: str, now: datetime) -> None:
        read = self.state.licenses.get(name)
        meta = self._license_meta.get(name)
        if read is None or meta is None:
            return
        uid, body = meta["uid"], meta["body"]
        # The records carry the revision number: wait until this spec has one (the leader gives
        # it on its next tick; a standby reads it from status.revision). Only a leader that cannot
        # keep revisions at all (keep_revisions failing) writes them without.
        revision = self.license_revision.get(name)
        if revision is not None and revision[0] != self._digest(name):
            revision = None
        if revision is None and (self._revisions_loaded or not self.leader):
            return
        audit = {**audit_of(body).as_data(), **({"revision": revision[1]} if revision else {})}
        phase = read.phase(now)
        created = parse_time(body["metadata"]["creationTimestamp"]) \
            if body.get("metadata", {}).get("creationTimestamp") else now
        if phase in (Phase.ACTIVE, Phase.GRACE, Phase.EXPIRED):
            start = max(created, read.spec.not_before) if read.spec.not_before else created
            self._append(records.license_record(name, uid, read.tenant, "activated", "activated", start,
                                                self.state.entitlement(read.tenant, start),
                                                self.cfg.source, audit if (read.generation or 1) == 1 else None))
        if (read.generation or 1) > 1:
            # Observed now (a restart re-deriving it writes the same id: the ledger keeps the first).
            self._append(records.license_record(name, uid, read.tenant, "updated", read.generation,
                                                now, self.state.entitlement(read.tenant, now),
                                                self.cfg.source, audit))
        if phase is Phase.EXPIRED:
            end = read.grace_ends
            self._append(records.license_record(name, uid, read.tenant, "expired", format_time(end), end,
                                                self.state.entitlement(read.tenant, end), self.cfg.source))
