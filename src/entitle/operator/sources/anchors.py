"""Usage anchors: a small object per counted object of a sourced kind, owned by it, so the
garbage collector deletes it with its owner -- at a time the same for every replica and
restart. A counted object's deletion is recorded at its anchor's ``deletionTimestamp``; the
anchor's finalizer goes once that record is made. The one owner of the anchors seen and of the
objects that departed and wait for theirs."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Any, Callable, Iterable

from entitle.api import GROUP, VERSION, Workload
from entitle.api.common import parse_time
from entitle.api.objects import api_group, metadata
from entitle.domain import records
from entitle.operator.finalizers import FinalizerAction, ReleaseAnchor
from entitle.operator.leadership import Term
from entitle.operator.sources.owners import Tracked
from entitle.operator.usage_meter import UsageMeter

log = logging.getLogger("entitle.sources")

ANCHOR_FINALIZER = "entitle.dev/usage-record"


def anchor_name(kind: str, name: str, uid: str) -> str:
    stem = f"{kind.lower()}-{name}".strip("-.")[:200].rstrip("-.") or "object"
    return f"{stem}-{hashlib.sha256(uid.encode()).hexdigest()[:8]}"


def anchor_body(tracked: Tracked) -> dict:
    meta = metadata(tracked.body)
    api_version, kind = tracked.body.get("apiVersion") or "", tracked.body.get("kind") or ""
    owner = {"apiVersion": api_version, "kind": kind, "name": meta["name"], "uid": tracked.uid}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "UsageAnchor",
        "metadata": {"name": anchor_name(kind, meta["name"], tracked.uid), "namespace": tracked.namespace,
                     "finalizers": [ANCHOR_FINALIZER], "labels": {"app.kubernetes.io/managed-by": "entitle"},
                     "ownerReferences": [owner]},
        "spec": {"owner": dict(owner)}}


class UsageAnchors:
    def __init__(self, meter: UsageMeter, term: Term, clock: Callable[[], datetime]) -> None:
        self.meter, self.term, self.clock = meter, term, clock
        self.anchors: dict[str, dict] = {}                          # owner uid -> anchor body
        self.departed: dict[str, tuple[Workload, str]] = {}         # uid -> (last claim, tenant), until its anchor goes

    def on_anchor(self, body: dict[str, Any], deleted: bool) -> list[FinalizerAction]:
        meta = metadata(body)
        owner = ((body.get("spec") or {}).get("owner") or {}).get("uid")
        if not owner:
            return []
        if deleted:
            self.anchors.pop(owner, None)
            return []
        self.anchors[owner] = body
        if not meta.get("deletionTimestamp"):
            return []
        # Its owner is gone: the garbage collector deleted the anchor at its deletion time.
        if owner in self.departed:
            self._record_departure(owner, parse_time(meta["deletionTimestamp"]))
        if not self.term.leader:
            return []
        return [ReleaseAnchor(meta.get("namespace"), meta.get("name"), list(meta.get("finalizers") or []))]

    def depart(self, uid: str, workload: Workload, tenant: str) -> bool:
        """A counted object is gone. With an anchor, its deletion is recorded at the anchor's
        deletion time (now, if the anchor is already going; else when it goes): True. Without
        one: False (the caller records it as observed)."""
        anchor = self.anchors.get(uid)
        if anchor is None:
            return False
        self.departed[uid] = (workload, tenant)
        deletion = metadata(anchor).get("deletionTimestamp")
        if deletion:
            self._record_departure(uid, parse_time(deletion))
        return True

    def adopt_vanished(self, uid: str, last: dict) -> bool:
        """A counted object that vanished while the operator was down, whose anchor is still
        here: its deletion waits for (or is timed by) the anchor."""
        if uid not in self.anchors or (last.get("data") or {}).get("operation") == "movedOut":
            return False
        return self.depart(uid, records.workload_from_record(last), last["subject"])

    def _record_departure(self, uid: str, when: datetime) -> None:
        workload, tenant = self.departed.pop(uid)
        self.meter.claim_gone(uid, workload, tenant, when, self.clock())

    # -- the leader's share -----------------------------------------------------------------------
    def to_create(self, counted: Iterable[Tracked]) -> list[dict]:
        """Anchor bodies for counted objects that have none yet."""
        return [anchor_body(t) for t in counted if t.uid not in self.anchors]

    async def make(self, api: Any, counted: Iterable[Tracked], per_tick: int = 100) -> None:
        for body in self.to_create(counted)[:per_tick]:
            meta = body["metadata"]
            try:
                await api.request("POST", f"apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/usageanchors", body,
                                  ok=(200, 201, 409))
                # Known once the watch shows it; meanwhile do not ask again this pass.
                self.anchors.setdefault(body["spec"]["owner"]["uid"], {"metadata": meta, "spec": body["spec"]})
            except Exception as exc:  # noqa: BLE001 -- the deletion is then timed when observed
                log.warning("usage anchor %s/%s: %s", meta["namespace"], meta["name"], exc)

    async def sweep(self, api: Any, tracked: Callable[[str], bool], kind_listed: Callable[[str, str], bool]) -> None:
        """Anchors whose owner is gone without the garbage collector deleting them (orphaned):
        delete them, and their termination records the departure."""
        for owner, anchor in list(self.anchors.items()):
            meta = metadata(anchor)
            if meta.get("deletionTimestamp") or tracked(owner) or not meta.get("uid"):
                continue
            spec_owner = (anchor.get("spec") or {}).get("owner") or {}
            if not kind_listed(api_group(spec_owner.get("apiVersion")), spec_owner.get("kind") or "") \
                    or meta.get("ownerReferences"):
                continue
            try:
                await api.request(
                    "DELETE", f"apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/usageanchors/{meta['name']}",
                    ok=(200, 202, 404))
            except Exception as exc:  # noqa: BLE001
                log.warning("removing orphaned anchor %s: %s", meta.get("name"), exc)
