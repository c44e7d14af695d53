"""When each namespace came to belong to its tenant, as this process can prove it: the moment it
observed the tenant label change, and the namespace's resourceVersion then (what pins a move's
record ids across replicas); else no earlier than the namespace's creation.

Never from ``managedFields``: a client writes those; once the label is gone they no longer hold
its entry, and a move came out older than what it moved (DESIGN "Usage records").
"""

from __future__ import annotations

from datetime import datetime

from entitle.api.common import parse_time


class TenancyHistory:
    def __init__(self) -> None:
        self._changed: dict[str, datetime] = {}        # namespace -> label change observed then
        self._versions: dict[str, str] = {}            # namespace -> its resourceVersion then
        self._created: dict[str, datetime] = {}        # namespace -> its creationTimestamp

    def observe(self, name: str, meta: dict, changed: bool, deleted: bool, now: datetime) -> None:
        """A watch event of the namespace; ``changed``: its tenant differs from before."""
        first_sight = name not in self._created
        if deleted:
            for known in (self._changed, self._versions, self._created):
                known.pop(name, None)
            return
        created = meta.get("creationTimestamp")
        self._created[name] = parse_time(created) if isinstance(created, str) else now
        if changed and not first_sight:
            # A label change seen happening: moves are dated now (when it was observed).
            self._changed[name] = now
            self._versions[name] = str(meta.get("resourceVersion") or "")

    def moved_at(self, namespace: str, default: datetime) -> datetime:
        """When the namespace's tenant last changed (``default`` when not seen happening)."""
        return self._changed.get(namespace, default)

    def change_version(self, namespace: str) -> str | None:
        """The namespace's resourceVersion at its last observed tenant change."""
        return self._versions.get(namespace)

    def tenant_since(self, namespace: str, default: datetime) -> datetime:
        """Since when the namespace is its tenant's: the label change this process saw, else
        (labelled before it looked) no earlier than the namespace itself."""
        return self._changed.get(namespace) or self._created.get(namespace, default)
