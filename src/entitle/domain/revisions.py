"""License revisions and their audit trail (DESIGN "Licenses from a vendor": revisions).

Pure. Two halves:

* **Stamping** (what the mutating License webhook does): a request that changes a License's
  spec gets audit annotations -- who (the request's user), with which field manager, when, the
  hash of the spec they wrote and, for ``entitle license rollback``, which revision it restores.
  A request that does not change the spec keeps the stored audit annotations as they are, so
  they cannot be edited by hand (an admin who disables the webhook can; these are a record,
  not a security boundary -- the signature is).
* **Numbering** (what the leader does): every distinct spec (hash over the spec *with* its
  signature, canonical JSON) gets the next number once; a spec held before keeps its number, so
  a rollback to revision 2 makes the License's ``status.revision`` 2 again. Numbers never move
  to another spec: ``history`` and ``diff`` always show what a number meant.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import rfc8785

from entitle.api.common import format_time
from entitle.api.license import LicenseSpec

PREFIX = "entitle.dev/"
CHANGED_BY = PREFIX + "changed-by"
FIELD_MANAGER = PREFIX + "field-manager"
CHANGED_AT = PREFIX + "changed-at"
SPEC_HASH = PREFIX + "spec-hash"
ROLLBACK_OF = PREFIX + "rollback-of"
# Set by ``entitle license rollback`` on its request; the webhook turns it into ROLLBACK_OF.
ROLLBACK_TO = PREFIX + "rollback-to"
AUDIT_KEYS = (CHANGED_BY, FIELD_MANAGER, CHANGED_AT, SPEC_HASH, ROLLBACK_OF)
# Revision numbers beyond this are refused as absurd (a hand-made rollback-to: 1e30).
MAX_REVISION = 1_000_000_000
UNKNOWN_AUTHOR = "unknown (changed while entitle's License webhook was not called)"


def spec_hash(spec: Any) -> str:
    """A short, stable hash of a spec as it means something: read through the model (defaults
    and formatting do not count), the signature included (a re-signed spec is a new revision)."""
    try:
        normalized = LicenseSpec.model_validate(spec).model_dump(by_alias=True, exclude_defaults=True, mode="json")
    except Exception:  # noqa: BLE001 -- an unreadable spec still has a hash: of its raw JSON
        normalized = {"unreadable": spec if isinstance(spec, dict) else repr(spec)}
    try:
        raw = rfc8785.dumps(normalized)
    except Exception:  # noqa: BLE001 -- e.g. floats out of range: hash the repr instead
        raw = repr(normalized).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def _annotations(obj: Any) -> dict[str, str]:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    ann = meta.get("annotations") if isinstance(meta, dict) else None
    return {k: v for k, v in ann.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(ann, dict) else {}


def _revision_number(text: str | None) -> int | None:
    try:
        value = int(str(text).strip())
    except (TypeError, ValueError):
        return None
    return value if 0 < value <= MAX_REVISION else None


def stamp(old: dict | None, new: dict, user: str | None, field_manager: str | None,
          now: datetime) -> dict[str, str | None]:
    """The audit annotations ``new`` must carry (value None: must not carry that key)."""
    new_ann, old_ann = _annotations(new), _annotations(old)
    wanted: dict[str, str | None]
    new_hash = spec_hash(new.get("spec"))
    if old is not None and spec_hash(old.get("spec")) == new_hash:
        # No change of meaning: the stored trail stands, whatever this request says.
        wanted = {k: old_ann.get(k) for k in AUDIT_KEYS}
    else:
        wanted = {CHANGED_BY: (user or "unknown")[:253], FIELD_MANAGER: (field_manager or "")[:128] or None,
                  CHANGED_AT: format_time(now), SPEC_HASH: new_hash, ROLLBACK_OF: None}
        target = _revision_number(new_ann.get(ROLLBACK_TO))
        if target is not None:
            wanted[ROLLBACK_OF] = str(target)
    wanted[ROLLBACK_TO] = None   # one-shot: consumed by this request either way
    return wanted


def annotation_patch(obj: dict, wanted: dict[str, str | None]) -> list[dict]:
    """RFC 6902 operations that make ``obj``'s annotations match ``wanted``."""
    current = _annotations(obj)
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    raw = meta.get("annotations")
    ops: list[dict] = []
    if not isinstance(raw, dict):
        values = {k: v for k, v in wanted.items() if v is not None}
        return [{"op": "add", "path": "/metadata/annotations", "value": values}] if values else []
    for key, value in wanted.items():
        path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
        if value is None and key in raw:
            ops.append({"op": "remove", "path": path})
        elif value is not None and current.get(key) != value:
            ops.append({"op": "add", "path": path, "value": value})
    return ops


@dataclass(frozen=True)
class Audit:
    """Who made a revision, as the webhook saw it."""

    changed_by: str = UNKNOWN_AUTHOR
    field_manager: str | None = None
    changed_at: str | None = None
    rollback_of: int | None = None

    def as_data(self) -> dict:
        out: dict = {"changedBy": self.changed_by, "changedAt": self.changed_at}
        if self.field_manager:
            out["fieldManager"] = self.field_manager
        if self.rollback_of is not None:
            out["rollbackOf"] = self.rollback_of
        return out


def audit_of(body: dict) -> Audit:
    """The audit of ``body``'s current spec: from its annotations when they were stamped for
    this very spec, else unknown (the change bypassed the webhook)."""
    ann = _annotations(body)
    if ann.get(SPEC_HASH) != spec_hash(body.get("spec")):
        return Audit()
    return Audit(ann.get(CHANGED_BY) or UNKNOWN_AUTHOR, ann.get(FIELD_MANAGER), ann.get(CHANGED_AT),
                 _revision_number(ann.get(ROLLBACK_OF)))


class Numbering:
    """The revisions of one License (by uid): spec hash -> number, numbers assigned in order."""

    def __init__(self, known: dict[str, int] | None = None) -> None:
        self.by_hash: dict[str, int] = dict(known or {})

    @property
    def latest(self) -> int:
        return max(self.by_hash.values(), default=0)

    def number(self, digest: str) -> tuple[int, bool]:
        """(the number of this spec hash, whether it is new)."""
        if digest in self.by_hash:
            return self.by_hash[digest], False
        self.by_hash[digest] = self.latest + 1
        return self.by_hash[digest], True
