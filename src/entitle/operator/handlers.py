"""Kopf handlers: watch events feed the controller; one validating handler serves Workloads."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from entitle.adapters.admission import RequestNotUnderstood
from entitle.api import GROUP, VERSION
from entitle.operator.controller import USAGE_FINALIZER, Controller
from entitle.operator.metrics import ADMISSION_LATENCY, DECISIONS

log = logging.getLogger("entitle.webhook")


def register(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    @kopf.on.event("", "v1", "namespaces", registry=registry)
    async def namespace_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.on_namespace(dict(body), deleted=type == "DELETED")

    @kopf.on.event(GROUP, VERSION, "licenses", registry=registry)
    async def license_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.on_license(dict(body), deleted=type == "DELETED")

    @kopf.on.event(GROUP, VERSION, "workloads", registry=registry)
    async def workload_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        actions = controller.on_workload(dict(body), deleted=type == "DELETED")
        if actions:
            await asyncio.to_thread(controller.apply_finalizer_actions, actions)

    # A new Workload carries the usage-record finalizer from birth, so even a deletion while the
    # operator is down reaches it with the object's last state and its deletionTimestamp.
    @kopf.on.mutate(GROUP, VERSION, "workloads", id="workloads-finalizer", operations=["CREATE"],
                    registry=registry)
    async def add_usage_finalizer(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        finalizers = list((body.get("metadata") or {}).get("finalizers") or [])
        if USAGE_FINALIZER not in finalizers:
            patch.metadata["finalizers"] = finalizers + [USAGE_FINALIZER]

    # One validating handler for the kind: its own endpoint (/workloads), for CREATE, UPDATE
    # and the scale subresource. It is async and never awaits between deciding and
    # reserving, so two requests on this loop cannot spend the same capacity.
    @kopf.on.validate(GROUP, VERSION, "workloads", id="workloads", subresource="*",
                      operations=["CREATE", "UPDATE"], registry=registry)
    async def validate_workload(body: kopf.Body, old: kopf.Body | None, operation: str,
                                subresource: str | None, dryrun: bool, warnings: list[str],
                                **_: Any) -> None:
        await controller.ready.wait()
        with ADMISSION_LATENCY.time():
            try:
                request, decision = await controller.admission.review(
                    controller.now(), operation=operation,
                    subresource=subresource, body=dict(body) if body is not None else None,
                    old=dict(old) if old is not None else None, dry_run=dryrun)
            except RequestNotUnderstood as exc:
                DECISIONS.labels(tenant="", reason="BadRequest", allowed="false").inc()
                raise kopf.AdmissionError(str(exc), code=400)
        DECISIONS.labels(tenant=decision.tenant or "", reason=decision.reason,
                         allowed=str(decision.allowed).lower()).inc()
        warnings.extend(decision.warnings)
        if not decision.allowed:
            log.info("denied %s %s/%s: %s", operation, request.namespace, request.name, decision.message)
            if not dryrun:
                controller.event("Workload", request.name, request.namespace, "Warning", decision.reason,
                                 f"denied {operation.lower()}: {decision.message}", controller.now(), own=True)
            raise kopf.AdmissionError(f"{decision.reason}: {decision.message}", code=403)
