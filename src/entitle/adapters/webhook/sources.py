"""Admission requests for sourced kinds (Deployments, Jobs, Pods, VMs...) in, engine requests out.

The object (or, for the ``scale`` subresource, the stored object with the new count) becomes
the same Workload-shaped claim the watches count (``entitle.domain.sources.claim``), so a
Deployment is decided exactly like a Workload: same checks, order, messages, holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from entitle.adapters.webhook.admission import NotYetKnown, RequestNotUnderstood, scale_request
from entitle.api import limits
from entitle.domain.admission import CREATE, UPDATE
from entitle.domain.sources import InvalidInstanceCount, Source, claim, controller_owner, matches, object_key
from entitle.domain.state import ClusterState, WorkloadRequest


def _claim(sources: list[Source], obj: Any, covered: Callable[[str], bool]) -> Any:
    """The claim of ``obj`` under the first source that counts it, or None (not counted)."""
    if not isinstance(obj, dict):
        return None
    owner = controller_owner(obj)
    if owner is not None and covered(owner):
        return None
    source = next((s for s in sources if matches(s, obj)), None)
    if source is None:
        return None
    try:
        return claim(source, obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RequestNotUnderstood(f"cannot read the object's claim: {'.'.join(map(str, first['loc']))}: "
                                   f"{first['msg']}") from None


def source_request(state: ClusterState, sources: list[Source], covered: Callable[[str], bool],
                   known: Callable[[str, str], bool | None], *, operation: str,
                   subresource: str | None, namespace: str, name: str, group: str, kind: str, body: Any, old: Any,
                   dry_run: bool) -> WorkloadRequest | None:
    """The engine request for an object of a sourced kind, or None when nothing counts it (it is
    then admitted untouched: not selected, or its controller owner is already counted).

    ``known(namespace, key)``: True when the watches count the object, False when they see it
    and do not count it, None when they have not seen it (yet). Raises
    :class:`InvalidInstanceCount` (a denial) when the count cannot be read.
    """
    key = object_key(kind, group, name)
    if subresource == "scale":
        stored = state.workload(namespace, key)
        if stored is None:
            if known(namespace, key) is False:
                return None   # watched, not counted (not selected, or its owner counts)
            raise NotYetKnown(f"{kind} {namespace}/{name} is not yet known to entitle (starting up?); retry")
        return scale_request(stored, body, old, namespace, key, dry_run)
    if operation not in (CREATE, UPDATE):
        return None
    new = _claim(sources, body, covered)
    try:
        previous = _claim(sources, old, covered) if old is not None else None
    except InvalidInstanceCount:
        previous = None      # what was stored was unreadable: measure from what the state holds
    if new is None:
        return None          # (no longer) counted: leaving the count is never a raise
    return WorkloadRequest(operation, namespace, key, new, previous, dry_run)


__all__ = ["source_request", "InvalidInstanceCount"]
