"""License revisions kept as ControllerRevisions, by the leader (DESIGN "Licenses from a vendor").

A mixin of :class:`entitle.operator.controller.Controller`. Every distinct spec a License holds
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
from typing import Any

from entitle.adapters.kube.async_api import ApiError
from entitle.api import GROUP, VERSION
from entitle.domain.revisions import Numbering, audit_of, spec_hash

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


class RevisionKeeping:
    def _init_revisions(self) -> None:
        # license name -> (spec hash, number) of its current spec, as far as this replica knows.
        self.license_revision: dict[str, tuple[str, int]] = {}
        self._numbering: dict[str, Numbering] = {}           # license uid -> numbering (leader)
        self._revisions_loaded = False
        self._unwritten: dict[tuple[str, int], dict] = {}    # (uid, number) -> ControllerRevision

    def _digest(self, name: str) -> str | None:
        known = self._license_meta.get(name) or {}
        return known.get("digest") or (spec_hash((known.get("body") or {}).get("spec")) if known else None)

    def _note_revision_status(self, name: str, body: dict[str, Any]) -> None:
        """Any replica: the number the leader published in status, if it is this spec's."""
        status = body.get("status") if isinstance(body.get("status"), dict) else {}
        number, digest = status.get("revision"), status.get("revisionHash")
        current = self._digest(name)
        if isinstance(number, int) and not isinstance(number, bool) and digest == current:
            self.license_revision[name] = (digest, number)
        elif name in self.license_revision and self.license_revision[name][0] != current:
            del self.license_revision[name]   # the spec moved on; its number is not known yet

    def revisions_of(self, names: Any) -> dict[str, int]:
        """``data.licenseRevisions`` for records: the known number of each license named."""
        return {n: self.license_revision[n][1] for n in sorted(names) if n in self.license_revision}

    def _revisions_lost_leadership(self) -> None:
        self._numbering.clear()
        self._unwritten.clear()
        self._revisions_loaded = False

    async def keep_revisions(self) -> None:
        """Leader, every tick: number new specs and write their ControllerRevisions."""
        if not self._revisions_loaded:
            _, listing = await self.async_api.request(
                "GET", f"apis/apps/v1/namespaces/{self.cfg.namespace}/controllerrevisions",
                params={"labelSelector": LICENSE_UID_LABEL})
            numbering: dict[str, Numbering] = {}
            for item in (listing or {}).get("items") or []:
                meta = item.get("metadata") or {}
                uid = (meta.get("labels") or {}).get(LICENSE_UID_LABEL)
                digest = (meta.get("annotations") or {}).get(HASH_ANNOTATION)
                if uid and digest and isinstance(item.get("revision"), int):
                    numbering.setdefault(uid, Numbering()).by_hash.setdefault(digest, item["revision"])
            self._numbering, self._revisions_loaded = numbering, True
        for name, known in list(self._license_meta.items()):
            body, uid = known.get("body") or {}, known.get("uid")
            if not uid or name not in self.state.licenses:
                continue
            digest = self._digest(name)
            number, new = self._numbering.setdefault(uid, Numbering()).number(digest)
            if new:
                self._unwritten[(uid, number)] = self._revision_object(name, uid, number, digest, body)
                log.info("license %s: revision %d (spec %s)", name, number, digest)
            if self.license_revision.get(name) != (digest, number):
                self.license_revision[name] = (digest, number)
                self.dirty.add(self.state.licenses[name].tenant)   # status.revision to write
        for key, revision in list(self._unwritten.items()):
            path = f"apis/apps/v1/namespaces/{self.cfg.namespace}/controllerrevisions"
            try:
                code, _ = await self.async_api.request("POST", path, revision, ok=(200, 201, 409))
                if code == 409:
                    # Taken: ours from an earlier term (fine), or a deleted License's of the same
                    # name the garbage collector has not reached yet -- remove that, retry.
                    _, there = await self.async_api.request("GET", f"{path}/{revision['metadata']['name']}",
                                                            ok=(200, 404))
                    owner = ((there or {}).get("metadata") or {}).get("labels", {}).get(LICENSE_UID_LABEL)
                    if there and owner != key[0]:
                        await self.async_api.request("DELETE", f"{path}/{revision['metadata']['name']}",
                                                     ok=(200, 202, 404))
                        continue
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
                "name": revision_name(name, number), "namespace": self.cfg.namespace,
                "labels": {LICENSE_LABEL: name[:63] if len(name) <= 63 else name[:54] + "-" + digest[:8],
                           LICENSE_UID_LABEL: uid, "app.kubernetes.io/managed-by": "entitle"},
                "annotations": {HASH_ANNOTATION: digest,
                                **{AUDIT_ANNOTATIONS[k]: str(v) for k, v in audit.items() if v is not None}},
                "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "License", "name": name, "uid": uid}],
            },
            "revision": number,
            "data": {"license": name, "spec": body.get("spec"), "audit": audit},
        }
