"""The two Workload webhooks: validating (entitlement decisions) and mutating (the usage-record
finalizer). Thin: the decision is the engine's, the envelope is ``adapters.webhook_server``'s."""

from __future__ import annotations

import logging
import time

from entitle.adapters.webhook.admission import RequestNotUnderstood
from entitle.adapters.webhook.server import AdmissionDenied, Review, ReviewCallback
from entitle.operator.controller import USAGE_FINALIZER, Controller
from entitle.operator.metrics import ADMISSION_LATENCY, DECISIONS

log = logging.getLogger("entitle.webhook")

VALIDATE_PATH = "/workloads"
FINALIZER_PATH = "/workloads-finalizer"


def routes(controller: Controller) -> dict[str, ReviewCallback]:
    async def validate(review: Review) -> None:
        # Until the first full listing is in memory, deciding would under-count: wait for it
        # (the apiserver's timeoutSeconds bounds the wait; failurePolicy decides what then).
        await controller.ready.wait()
        started = time.perf_counter()
        try:
            request, decision = await controller.admission.review(
                controller.now(), operation=review.operation, subresource=review.subresource,
                body=review.body, old=review.old, dry_run=review.dry_run,
                namespace=review.namespace, name=review.name)
        except RequestNotUnderstood as exc:
            DECISIONS.labels(tenant="", reason="BadRequest", allowed="false").inc()
            raise AdmissionDenied(str(exc), code=400, reason="BadRequest")
        finally:
            ADMISSION_LATENCY.observe(time.perf_counter() - started)
        DECISIONS.labels(tenant=decision.tenant or "", reason=decision.reason,
                         allowed=str(decision.allowed).lower()).inc()
        review.warnings.extend(decision.warnings)
        if not decision.allowed:
            log.info("denied %s %s/%s: %s", review.operation, request.namespace, request.name, decision.message)
            if not review.dry_run:
                subject = request.workload or request.old
                controller.event("Workload", request.name, request.namespace, "Warning", decision.reason,
                                 f"denied {review.operation.lower()}: {decision.message}", controller.now(),
                                 uid=subject.metadata.uid if subject is not None else None, own=True)
            raise AdmissionDenied(f"{decision.reason}: {decision.message}", code=403, reason="Forbidden")

    # A new Workload carries the usage-record finalizer from birth, so even a deletion while the
    # operator is down reaches it with the object's last state and its deletionTimestamp.
    async def add_usage_finalizer(review: Review) -> None:
        if review.operation != "CREATE" or not isinstance(review.body, dict):
            return
        meta = review.body.get("metadata")
        finalizers = meta.get("finalizers") if isinstance(meta, dict) else None
        if not isinstance(finalizers, list):
            finalizers = []
        if USAGE_FINALIZER in finalizers:
            return
        if finalizers:
            review.patch.append({"op": "add", "path": "/metadata/finalizers/-", "value": USAGE_FINALIZER})
        else:
            review.patch.append({"op": "add", "path": "/metadata/finalizers", "value": [USAGE_FINALIZER]})

    return {VALIDATE_PATH: validate, FINALIZER_PATH: add_usage_finalizer}
