"""Admission requests for sourced kinds (Deployments, Jobs, Pods, VMs...) in, engine requests out.

The object (or, for the ``scale`` subresource, the stored object with the new count) becomes
the same Workload-shaped claim the watches count (``entitle.domain.sources.claim``), so a
Deployment is decided exactly like a Workload: same checks, order, messages, holds.

Whether the object is counted at all follows the owner rule (``entitle.domain.ownership``): a
controller reference is believed only when it names a watched object of a plausible kind whose
chain reaches a counted object; anything else is counted on its own, and gated.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import ValidationError

from entitle.adapters.webhook.admission import NotYetKnown, RequestNotUnderstood, scale_request
from entitle.domain.admission import CREATE, UPDATE
from entitle.domain.normalization import InstanceTable
from entitle.domain.ownership import ControllerRef, GroupKind, controller_ref
from entitle.domain.sources import InvalidInstanceCount, Source, claim, matches, object_key
from entitle.domain.state import ClusterState, WorkloadRequest
from entitle.api.objects import first_error


class Owners(Protocol):
    """What the watches know of controllers (implemented by the operator's source keeping)."""

    def covered(self, child: GroupKind, namespace: str, ref: ControllerRef | None) -> bool:
        """The reference is believed and its chain reaches a counted object."""

    def awaited(self, child: GroupKind, ref: ControllerRef | None) -> bool:
        """The reference is plausible and of a watched kind, but its object is not known yet."""

    def known(self, namespace: str, key: str) -> bool | None:
        """True: the watches count the object; False: they see it, uncounted; None: not seen."""


class OwnerNotYetKnown(NotYetKnown):
    """The object's controller (of a kind entitle watches) has not reached entitle's watch yet:
    a controller's child often arrives a moment before the controller's own watch event."""


def _claim(sources: list[Source], obj: Any, owners: Owners, table: InstanceTable, child: GroupKind,
           namespace: str, wait_for_owner: bool) -> Any:
    """The claim of ``obj`` under the first source that counts it, or None (not counted)."""
    if not isinstance(obj, dict):
        return None
    ref = controller_ref(obj)
    if ref is not None and owners.covered(child, namespace, ref):
        return None
    if wait_for_owner and owners.awaited(child, ref):
        raise OwnerNotYetKnown(f"{child[1]} {namespace}: its controller {ref.kind} {ref.name} is not yet known "
                               "to entitle; retry")
    source = next((s for s in sources if matches(s, obj)), None)
    if source is None:
        return None
    try:
        return claim(source, obj, table)
    except ValidationError as exc:
        raise RequestNotUnderstood(f"cannot read the object's claim: {first_error(exc)}") from None


def source_request(state: ClusterState, sources: list[Source], owners: Owners, *, operation: str,
                   subresource: str | None, namespace: str, name: str, group: str, kind: str, body: Any, old: Any,
                   dry_run: bool, wait_for_owner: bool = True) -> WorkloadRequest | None:
    """The engine request for an object of a sourced kind, or None when nothing counts it (it is
    then admitted untouched: not selected, or a believed controller chain already counts it).

    Raises :class:`InvalidInstanceCount` (a denial) when the count cannot be read, and
    :class:`OwnerNotYetKnown` while ``wait_for_owner`` and its controller is not known yet (the
    caller waits briefly, then asks again without waiting: the object then counts on its own).
    """
    key = object_key(kind, group, name)
    if subresource == "scale":
        stored = state.workload(namespace, key)
        if stored is None:
            if owners.known(namespace, key) is False:
                return None   # watched, not counted (not selected, or its owner counts)
            raise NotYetKnown(f"{kind} {namespace}/{name} is not yet known to entitle (starting up?); retry")
        return scale_request(stored, body, old, namespace, key, dry_run)
    if operation not in (CREATE, UPDATE):
        return None
    child = (group, kind)
    new = _claim(sources, body, owners, state.table, child, namespace, wait_for_owner)
    try:
        previous = _claim(sources, old, owners, state.table, child, namespace, False) if old is not None else None
    except InvalidInstanceCount:
        previous = None      # what was stored was unreadable: measure from what the state holds
    if new is None:
        return None          # (no longer) counted: leaving the count is never a raise
    return WorkloadRequest(operation, namespace, key, new, previous, dry_run)


__all__ = ["source_request", "InvalidInstanceCount", "OwnerNotYetKnown", "Owners"]
