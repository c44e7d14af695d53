"""Admission requests in, engine decisions out: the webhook's translation layer (no Kopf here).

A request on the ``scale`` subresource carries an ``autoscaling/v1`` Scale, not a Workload:
it is turned into an UPDATE of the stored Workload with ``spec.replicas`` replaced. The decider
that holds capacity for what is admitted is ``adapters.webhook.shared_admission``.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from entitle.api import Workload, limits
from entitle.domain.admission import CREATE, DELETE, UPDATE
from entitle.domain.state import ClusterState, WorkloadRequest
from entitle.domain.stored import StoredWorkload
from entitle.api.objects import first_error


class RequestNotUnderstood(Exception):
    """The admission request is malformed or refers to a workload entitle has not seen yet."""


class NotYetKnown(RequestNotUnderstood):
    """A scale of a Workload this replica's watch has not delivered yet (it was created through
    another replica a moment ago): worth waiting for, briefly."""


def _workload(body: Any, namespace: str | None) -> Workload | None:
    if body is None:
        return None
    if not isinstance(body, dict):
        raise RequestNotUnderstood(f"invalid Workload: expected an object, got {type(body).__name__}")
    try:
        workload = Workload.model_validate(dict(body))
    except ValidationError as exc:
        raise RequestNotUnderstood(f"invalid Workload: {first_error(exc)}") from None
    if not workload.metadata.namespace:
        workload.metadata.namespace = namespace
    return workload


class ViewBehind(NotYetKnown):
    """A scale of an object this replica's watch shows at another resourceVersion than the
    apiserver's: its generation (which settles the reservation) and count are not known here
    yet. Worth waiting for; past the wait, a retryable error, like :class:`NotYetKnown`."""


def _int_replicas(spec: Any) -> int | None:
    replicas = spec.get("replicas", 0) if isinstance(spec, dict) else None
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= limits.MAX_REPLICAS:
        return None
    return replicas


def scale_request(stored: StoredWorkload, body: Any, old: Any, namespace: str, key: str, dry_run: bool) -> WorkloadRequest:
    """An UPDATE of the stored object with ``spec.replicas`` from the Scale in ``body``.

    The change is measured from the Scale's *old* replica count too (what the apiserver
    stores now), not only from this replica's view: two scales of one object admitted at once
    by two replicas would otherwise each see the other's decrease as already done, and one
    "decrease" could land on top of a lower count another replica already gave away.
    """
    replicas = _int_replicas((body or {}).get("spec") if isinstance(body, dict) else None)
    if replicas is None:
        raise RequestNotUnderstood(f"scale: spec.replicas must be an integer from 0 to {limits.MAX_REPLICAS}")
    updated = stored.to_model()
    updated.spec.replicas = replicas
    actual = stored.to_model()
    old_scale = old if isinstance(old, dict) else {}
    old_replicas = _int_replicas(old_scale.get("spec")) if "spec" in old_scale else None
    if old_replicas is not None and old_replicas != stored.spec.replicas:
        actual.spec.replicas = old_replicas
    meta = old_scale.get("metadata") if isinstance(old_scale.get("metadata"), dict) else {}
    seen, current = stored.metadata.resource_version, meta.get("resourceVersion")
    if seen and current and seen != current:
        raise ViewBehind(f"{namespace}/{key} changed a moment ago and entitle's watch has not caught up; retry")
    return WorkloadRequest(UPDATE, namespace, key, updated, actual, dry_run)


def to_request(state: ClusterState, *, operation: str, subresource: str | None,
               body: Any, old: Any, dry_run: bool, namespace: str | None = None,
               name: str | None = None) -> WorkloadRequest:
    """The engine's request for an AdmissionRequest. ``namespace``/``name`` are the request's own
    (the apiserver's, from the URL); the object's metadata is only a fallback."""
    raw = body if body is not None else old
    if raw is not None and not isinstance(raw, dict):
        raise RequestNotUnderstood(f"the admission request's object is a {type(raw).__name__}, not an object")
    meta = (raw or {}).get("metadata") or {}
    if not isinstance(meta, dict):
        raise RequestNotUnderstood("the admission request's object has no usable metadata")
    namespace = namespace or meta.get("namespace") or "default"
    name = name or meta.get("name") or ""
    if not isinstance(namespace, str) or not isinstance(name, str):
        raise RequestNotUnderstood("namespace and name must be strings")
    if operation == DELETE:
        return WorkloadRequest(DELETE, namespace, name, None, _workload(old, namespace), dry_run)
    if subresource == "scale":
        stored = state.workload(namespace, name)
        if stored is None:
            raise NotYetKnown(f"workload {namespace}/{name} is not yet known to entitle (starting up?); retry")
        return scale_request(stored, body, old, namespace, name, dry_run)
    if operation not in (CREATE, UPDATE):
        raise RequestNotUnderstood(f"operation {operation} is not handled")
    if body is None:
        raise RequestNotUnderstood(f"{operation} without an object")
    return WorkloadRequest(operation, namespace, name, _workload(body, namespace), _workload(old, namespace), dry_run)
