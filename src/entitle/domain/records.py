"""Usage records (the billing contract): CloudEvents 1.0 with deterministic ids.

The id of a record is a hash of *what changed* (object uid, generation, operation), never of
when it was observed, so a replay or a restart produces the same id and downstream systems
deduplicate on ``(source, id)``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from entitle.api import Workload
from entitle.api.common import format_time
from entitle.domain.entitlement import Entitlement
from entitle.domain.normalization import InstanceTable

WORKLOAD_TYPE = "dev.entitle.workload.v1"
LICENSE_TYPE = "dev.entitle.license.v1"
NOTICE_TYPE = "dev.entitle.notice.v1"
AMENDMENT_TYPE = "dev.entitle.amendment.v1"
FEATURE_TYPE = "dev.entitle.feature.v1"
SESSION_TYPE = "dev.entitle.session.v1"
AMENDMENT_SOURCE = "entitle.dev/amend"
# The meters an amendment may correct: the additive ones (a peak is not a sum to correct).
AMENDABLE_METERS = ("instance_hours", "overage_instance_hours", "seat_hours")
AMENDABLE_PREFIX = "feature_workload_hours:"
DEFAULT_SOURCE = "entitle.dev/operator"


def record_id(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]


def _event(type_: str, id_: str, tenant: str, time: datetime, data: dict, source: str) -> dict:
    return {
        "specversion": "1.0", "id": id_, "source": source, "type": type_, "subject": tenant,
        "time": format_time(time), "datacontenttype": "application/json", "data": data,
    }


def workload_record(workload: Workload, operation: str, tenant: str, time: datetime,
                    table: InstanceTable, licenses: tuple[str, ...] | list[str],
                    source: str = DEFAULT_SOURCE, license_revisions: dict[str, int] | None = None) -> dict:
    """``dev.entitle.workload.v1`` for a created / updated / deleted (/ moved) Workload."""
    meta, spec = workload.metadata, workload.spec
    generation = meta.generation or 1
    key = "deleted" if operation == "deleted" else generation
    data = {
        "tenant": tenant, "apiVersion": workload.api_version, "kind": workload.kind,
        "namespace": meta.namespace, "name": meta.name, "uid": meta.uid,
        "generation": generation, "operation": operation, "instanceKind": spec.instance_kind,
        "replicas": spec.replicas, "units": table.units(spec.instance_kind, spec.replicas),
        "users": sorted(set(spec.users)), "guests": sorted(set(spec.guests)),
        "features": sorted(set(spec.features)), "licenses": sorted(licenses),
        # The revision of each license drawn on (DESIGN: revisions); absent when not known yet.
        "licenseRevisions": {n: r for n, r in sorted((license_revisions or {}).items()) if n in licenses},
    }
    return _event(WORKLOAD_TYPE, record_id("workload", meta.uid, key, operation), tenant, time, data, source)


def moved_records(workload: Workload, before: str | None, after: str | None, time: datetime,
                  table: InstanceTable, licenses_after: tuple[str, ...] | list[str],
                  source: str = DEFAULT_SOURCE, license_revisions: dict[str, int] | None = None,
                  change: str | None = None) -> list[dict]:
    """A namespace changed tenant (label changed, added or removed): the workload stops counting
    under ``before`` (``movedOut``, like a deletion) and starts under ``after`` (``movedIn``, like
    a creation), both timed at the label change. A side without a tenant is not written.

    The ids pin the move: the object, both tenants, and what changed -- the namespace's
    resourceVersion at the label change (``change``) when it was seen happening, so every replica
    that saw it writes the same two records whenever it saw it; else the moment."""
    out = []
    moment = f"rv:{change}" if change else format_time(time)
    for operation, tenant, licenses in (("movedOut", before, ()), ("movedIn", after, licenses_after)):
        if not tenant:
            continue
        record = workload_record(workload, operation, tenant, time, table, licenses, source, license_revisions)
        record["id"] = record_id("workload", workload.metadata.uid, operation, before or "", after or "", moment)
        out.append(record)
    return out


def license_record(name: str, uid: str, tenant: str, operation: str, key: object, time: datetime,
                   entitlement: Entitlement, source: str = DEFAULT_SOURCE, audit: dict | None = None) -> dict:
    """``dev.entitle.license.v1``; ``key`` pins what changed (generation, or the moment of expiry).
    ``audit`` (activated / updated): the revision and who made it -- ``revision``, ``changedBy``,
    ``changedAt``, ``fieldManager``, ``rollbackOf`` (domain.revisions)."""
    data = {"tenant": tenant, "name": name, "operation": operation, "entitlement": entitlement.as_record(),
            **(audit or {})}
    return _event(LICENSE_TYPE, record_id("license", uid, operation, key), tenant, time, data, source)


def notice_record(kind: str, tenant: str, subject_kind: str, subject: str, uid: str | None, message: str,
                  time: datetime, source: str = DEFAULT_SOURCE) -> dict:
    """``dev.entitle.notice.v1``: a lifecycle notice (``domain.notices``). Not usage: export
    and push leave it out; a sink delivers it like any record. The id pins the crossing (what,
    of which object, when), so a re-delivery deduplicates."""
    data = {"notice": kind, "kind": subject_kind, "name": subject, "uid": uid, "message": message}
    return _event(NOTICE_TYPE, record_id("notice", subject_kind, uid or subject, kind, format_time(time)),
                  tenant, time, {k: v for k, v in data.items() if v is not None}, source)


def is_amendable(meter: str) -> bool:
    return meter in AMENDABLE_METERS or (meter.startswith(AMENDABLE_PREFIX) and len(meter) > len(AMENDABLE_PREFIX))


def amendment_record(tenant: str, meter: str, start: datetime, end: datetime, quantity: float, reason: str,
                     time: datetime, author: str | None = None) -> dict:
    """``dev.entitle.amendment.v1``: a correction of an additive meter over ``[start, end)``,
    spread evenly over that period (export and push count the share inside their window).

    The id pins what is corrected (tenant, meter, period, quantity, reason) and not when: the
    same amendment run twice by a retrying script is stored once. Correcting the same period
    by the same amount a second time needs its own reason."""
    data = {"tenant": tenant, "meter": meter, "from": format_time(start), "to": format_time(end),
            "quantity": quantity, "reason": reason}
    if author:
        data["author"] = author
    return _event(AMENDMENT_TYPE, record_id("amendment", tenant, meter, data["from"], data["to"], repr(float(quantity)),
                                            reason), tenant, time, data, AMENDMENT_SOURCE)


def feature_record(tenant: str, feature: str, hour: datetime, evaluations: int, replica: str, session: str,
                   source: str = DEFAULT_SOURCE) -> dict:
    """``dev.entitle.feature.v1``: how often a tenant's applications evaluated a feature flag in
    one UTC hour, as counted by one replica. The id pins tenant, feature, hour, the replica and
    its process (``session``): replicas count separately and add up; a restarted process writes
    its own record for an hour its predecessor had already flushed part of."""
    data = {"tenant": tenant, "feature": feature, "hour": format_time(hour), "evaluations": int(evaluations),
            "replica": replica}
    return _event(FEATURE_TYPE, record_id("feature", tenant, feature, data["hour"], replica, session), tenant, hour,
                  data, source)


def vanished_workload_record(last: dict, time: datetime) -> dict:
    """``deleted`` for a workload that disappeared while nobody watched, from its last record."""
    data = dict(last["data"], operation="deleted")
    return _event(WORKLOAD_TYPE, record_id("workload", data["uid"], "deleted", "deleted"), last["subject"],
                  time, data, last["source"])


def workload_from_record(record: dict) -> Workload:
    """The claim a workload record describes (what was counted), for a deletion recorded later."""
    data = record.get("data") or {}
    workload = Workload.model_validate({
        "metadata": {"name": data.get("name") or "", "namespace": data.get("namespace"), "uid": data.get("uid"),
                     "generation": data.get("generation")},
        "spec": {"instanceKind": data.get("instanceKind") or "container", "replicas": data.get("replicas") or 0,
                 "users": data.get("users") or [], "guests": data.get("guests") or [],
                 "features": data.get("features") or []}})
    workload.kind = data.get("kind") or "Workload"               # type: ignore[assignment]
    workload.api_version = data.get("apiVersion") or workload.api_version
    return workload


def session_record(tenant: str, session_id: str, user: str, seat: str, operation: str, time: datetime,
                   since: datetime, source: str = DEFAULT_SOURCE, ttl: int | None = None,
                   noticed: bool = False) -> dict:
    """``dev.entitle.session.v1``: a session checked out, checked in or lapsed. One id per
    (session, checkout) and one per (session, end) -- however it ended -- so every replica's
    recorder writes the same two records. ``seat`` is what the cap counted: the user (perUser)
    or the session itself. ``noticed``: an end this replica's ledger missed (it was down while
    the session ended and was trimmed), dated when noticed, under an id of its own -- the true
    end, in a peer's ledger, is earlier and is the one an export over both counts."""
    end = operation != "checkout"
    data = {"tenant": tenant, "session": session_id, "user": user, "seat": seat, "operation": operation,
            "since": format_time(since)}
    if ttl is not None:
        data["ttlSeconds"] = ttl
    if noticed:
        data["noticed"] = True
    which = "noticed-end" if noticed else "end" if end else "checkout"
    return _event(SESSION_TYPE, record_id("session", tenant, session_id, which), tenant, time, data, source)
