"""License revisions kept as ControllerRevisions, by the leader (DESIGN "Licenses from a vendor").

Every distinct spec a License holds
gets a number (``domain.revisions.Numbering``: a spec held before keeps its number) and an
immutable ControllerRevision ``<license>-<n>`` in the operator's namespace:

* owned by the License (deleting the License deletes its revisions, through the garbage
  collector), labelled ``entitle.dev/license`` and ``entitle.dev/license-uid``;
* ``data`` = ``{"spec": ..., "audit": {...}}`` -- the spec exactly as stored, signature
  included (so a rollback restores a still-valid signed spec), and who made it
  (``domain.revisions.audit_of``: the webhook's stamps, or "unknown" when it was bypassed);
* the number is also in ``status.revision`` (and ``status.revisionHash``), which every replica
  reads from the watch to put ``data.licenseRevisions`` into usage records.

The numbering is loaded from the existing ControllerRevisions once per leadership term before
any number is given; until then no new number is handed out (a new leader never re-numbers).
A ControllerRevision that could not be written is retried on the next tick.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from entitle.adapters.kube.async_api import ApiError
from entitle.api import GROUP, VERSION
from entitle.domain.revisions import Numbering, audit_of
from entitle.domain.state import ClusterState
from entitle.operator.leadership import Term
from entitle.operator.license_specs import LicenseSpecs
from entitle.operator.marks import StatusMarks
from entitle.api.objects import metadata

log = logging.getLogger("entitle.controller")

LICENSE_LABEL = "entitle.dev/license"
LICENSE_UID_LABEL = "entitle.dev/license-uid"
HASH_ANNOTATION = "entitle.dev/spec-hash"
AUDIT_ANNOTATIONS = {"changedBy": "entitle.dev/changed-by", "changedAt": "entitle.dev/changed-at",
                     "fieldManager": "entitle.dev/field-manager", "rollbackOf": "entitle.dev/rollback-of"}


def revision_name(license_name: str, number: int) -> str:
    # ControllerRevision names are DNS subdomains (253); License names are too, so cut the
    # license part -- the labels, not the name, are what lookups use.
    return f"{license_name[:240]}-{number}"


class LicenseRevisions:
    def __init__(self, namespace: str, state: ClusterState, specs: LicenseSpecs, marks: StatusMarks, term: Term,
                 api: Any) -> None:
        self.namespace, self.state, self.specs, self.marks, self.term, self.api = \
            namespace, state, specs, marks, term, api
        # license name -> (spec hash, number) of its current spec, as far as this replica knows.
        self.current: dict[str, tuple[str, int]] = {}
        self._numbering: dict[str, Numbering] = {}           # license uid -> numbering (leader)
        self.loaded = False
        self._unwritten: dict[tuple[str, int], dict] = {}    # (uid, number) -> ControllerRevision

    def note_status(self, name: str, body: dict[str, Any]) -> None:
        """Any replica: the number the leader published in status, if it is this spec's."""
        status = body.get("status") if isinstance(body.get("status"), dict) else {}
        number, digest = status.get("revision"), status.get("revisionHash")
        current = self.specs.digest(name)
        if isinstance(number, int) and not isinstance(number, bool) and digest == current:
            self.current[name] = (digest, number)
        elif name in self.current and self.current[name][0] != current:
            del self.current[name]   # the spec moved on; its number is not known yet

    def forget(self, name: str) -> None:
        self.current.pop(name, None)

    def numbers_of(self, names: Iterable[str]) -> dict[str, int]:
        """``data.licenseRevisions`` for records: the known number of each license named."""
        return {n: self.current[n][1] for n in sorted(names) if n in self.current}

    def numbers(self) -> dict[str, int]:
        return {n: number for n, (_, number) in self.current.items()}

    def for_records(self, name: str) -> tuple[bool, tuple[str, int] | None]:
        """(ready, revision): the records of the License's current spec carry its revision
        number, so they wait until it has one (the leader gives it on its next tick; a standby
        reads it from status.revision). Only a leader that cannot keep revisions at all (keeping
        them failing) writes them without."""
        revision = self.current.get(name)
        if revision is not None and revision[0] != self.specs.digest(name):
            revision = None
        if revision is None and (self.loaded or not self.term.leader):
            return False, None
        return True, revision

    def lost_leadership(self) -> None:
        self._numbering.clear()
        self._unwritten.clear()
        self.loaded = False

    async def keep(self) -> None:
        """Leader, every tick: number new specs and write their ControllerRevisions."""
        if not self.loaded:
            await self._load()
        for name, known in self.specs.items():
            if not known.uid or name not in self.state.licenses:
                continue
            number, new = self._numbering.setdefault(known.uid, Numbering()).number(known.digest)
            if new:
                self._unwritten[(known.uid, number)] = self._revision_object(name, known.uid, number, known.digest,
                                                                             known.body)
                log.info("license %s: revision %d (spec %s)", name, number, known.digest)
            if self.current.get(name) != (known.digest, number):
                self.current[name] = (known.digest, number)
                self.marks.tenant(self.state.licenses[name].tenant)   # status.revision to write
        for key, revision in list(self._unwritten.items()):
            await self._write(key, revision)

    async def _load(self) -> None:
        _, listing = await self.api.request(
            "GET", f"apis/apps/v1/namespaces/{self.namespace}/controllerrevisions",
            params={"labelSelector": LICENSE_UID_LABEL})
        numbering: dict[str, Numbering] = {}
        for item in (listing or {}).get("items") or []:
            meta = metadata(item)
            uid = (meta.get("labels") or {}).get(LICENSE_UID_LABEL)
            digest = (meta.get("annotations") or {}).get(HASH_ANNOTATION)
            if uid and digest and isinstance(item.get("revision"), int):
                numbering.setdefault(uid, Numbering()).by_hash.setdefault(digest, item["revision"])
        self._numbering, self.loaded = numbering, True

    async def _write(self, key: tuple[str, int], revision: dict) -> None:
        path = f"apis/apps/v1/namespaces/{self.namespace}/controllerrevisions"
        try:
            code, _ = await self.api.request("POST", path, revision, ok=(200, 201, 409))
            if code == 409:
                # Taken: ours from an earlier term (fine), or a deleted License's of the same
                # name the garbage collector has not reached yet -- remove that, retry.
                _, there = await self.api.request("GET", f"{path}/{revision['metadata']['name']}", ok=(200, 404))
                owner = metadata(there).get("labels", {}).get(LICENSE_UID_LABEL)
                if there and owner != key[0]:
                    await self.api.request("DELETE", f"{path}/{revision['metadata']['name']}", ok=(200, 202, 404))
                    return
            del self._unwritten[key]
        except ApiError as exc:
            if exc.status == 404:   # the License is gone (owner) or the namespace: drop it
                del self._unwritten[key]
            log.warning("revision %s not written yet: %s", revision["metadata"]["name"], exc)

    def _revision_object(self, name: str, uid: str, number: int, digest: str, body: dict) -> dict:
        audit = audit_of(body).as_data()
        return {
            "apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {
                "name": revision_name(name, number), "namespace": self.namespace,
                "labels": {LICENSE_LABEL: name[:63] if len(name) <= 63 else name[:54] + "-" + digest[:8],
                           LICENSE_UID_LABEL: uid, "app.kubernetes.io/managed-by": "entitle"},
                "annotations": {HASH_ANNOTATION: digest,
                                **{AUDIT_ANNOTATIONS[k]: str(v) for k, v in audit.items() if v is not None}},
                "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "License", "name": name, "uid": uid}],
            },
            "revision": number,
            "data": {"license": name, "spec": body.get("spec"), "audit": audit},
        }
