"""Admission requests in, engine decisions out: the webhook's translation layer (no Kopf here).

A request on the ``scale`` subresource carries an ``autoscaling/v1`` Scale, not a Workload:
it is turned into an UPDATE of the stored Workload with ``spec.replicas`` replaced.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from entitle.api import Workload
from entitle.domain.admission import CREATE, DELETE, UPDATE, Decision
from entitle.domain.state import ClusterState, WorkloadRequest


class RequestNotUnderstood(Exception):
    """The admission request is malformed or refers to a workload entitle has not seen yet."""


def _workload(body: dict[str, Any] | None, namespace: str | None) -> Workload | None:
    if body is None:
        return None
    try:
        workload = Workload.model_validate(dict(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RequestNotUnderstood(f"invalid Workload: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    if not workload.metadata.namespace:
        workload.metadata.namespace = namespace
    return workload


def to_request(state: ClusterState, *, operation: str, subresource: str | None,
               body: dict[str, Any] | None, old: dict[str, Any] | None, dry_run: bool) -> WorkloadRequest:
    raw = body if body is not None else old or {}
    meta = raw.get("metadata") or {}
    namespace, name = meta.get("namespace") or "default", meta.get("name") or ""
    if operation == DELETE:
        return WorkloadRequest(DELETE, namespace, name, None, _workload(old, namespace), dry_run)
    if subresource == "scale":
        stored = state.workload(namespace, name)
        if stored is None:
            raise RequestNotUnderstood(
                f"workload {namespace}/{name} is not yet known to entitle (starting up?); retry")
        replicas = ((body or {}).get("spec") or {}).get("replicas", 0)
        updated = stored.model_copy(deep=True)
        updated.spec.replicas = int(replicas)
        return WorkloadRequest(UPDATE, namespace, name, updated, stored, dry_run)
    if operation not in (CREATE, UPDATE):
        raise RequestNotUnderstood(f"operation {operation} is not handled")
    return WorkloadRequest(operation, namespace, name, _workload(body, namespace), _workload(old, namespace), dry_run)


def review(state: ClusterState, now: datetime, reserve_for: timedelta, **request: Any) -> tuple[WorkloadRequest, Decision]:
    """Decide one admission request and, when allowed, reserve what it raises."""
    parsed = to_request(state, **request)
    return parsed, state.admit(parsed, now, reserve_for=reserve_for)
