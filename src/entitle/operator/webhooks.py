"""The webhooks: Workloads (validating: entitlement decisions; mutating: the usage-record
finalizer) and the sourced kinds (validating, the same decisions for Deployments, Jobs, Pods...).
Thin: the decision is the engine's, the envelope is ``adapters.webhook.server``'s."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any, Callable

from entitle.adapters.webhook.admission import RequestNotUnderstood
from entitle.adapters.webhook.server import AdmissionDenied, Review, ReviewCallback
from entitle.adapters.webhook.shared_admission import SharedAdmission
from entitle.adapters.webhook.sources import InvalidInstanceCount, OwnerNotYetKnown, source_request
from entitle.domain import reasons
from entitle.domain.admission import Decision
from entitle.operator.events import EventQueue
from entitle.operator.finalizers import USAGE_FINALIZER
from entitle.operator.metrics import ADMISSION_ERRORS, ADMISSION_LATENCY, DECISIONS
from entitle.operator.sources.catalog import SourceCatalog
from entitle.operator.sources.owners import SourceOwners

log = logging.getLogger("entitle.webhook")

VALIDATE_PATH = "/workloads"
FINALIZER_PATH = "/workloads-finalizer"
SOURCES_PATH = "/sources"
# The reasons a fleet lease can cure, and the pool each is about.
FLEET_POOLS = {reasons.INSTANCE_CAP_EXCEEDED: "instances", reasons.SEAT_CAP_EXCEEDED: "seats"}


class WorkloadWebhooks:
    def __init__(self, admission: SharedAdmission, catalog: SourceCatalog, owners: SourceOwners, events: EventQueue,
                 ready: asyncio.Event, clock: Callable[[], datetime], fleet: Any = None) -> None:
        self.admission, self.state = admission, admission.state
        self.catalog, self.owners, self.events, self.ready, self.clock = catalog, owners, events, ready, clock
        self.fleet = fleet      # operator.fleet.FleetMember in member mode

    def routes(self) -> dict[str, ReviewCallback]:
        return {path: counting_errors(path, callback) for path, callback in
                {VALIDATE_PATH: self.validate, FINALIZER_PATH: add_usage_finalizer,
                 SOURCES_PATH: self.validate_source}.items()}

    async def validate(self, review: Review) -> None:
        # Until the first full listing is in memory, deciding would under-count: wait for it
        # (the apiserver's timeoutSeconds bounds the wait; failurePolicy decides what then).
        await self.ready.wait()
        started = time.perf_counter()
        try:
            request, decision = await self._review(review)
            if await self._grew_fleet_lease(decision):
                request, decision = await self._review(review)
            if self.fleet is not None and decision.allowed and decision.tenant is not None:
                self.fleet.ahead(decision.tenant)
        except RequestNotUnderstood as exc:
            DECISIONS.labels(tenant="", reason="BadRequest", allowed="false").inc()
            raise AdmissionDenied(str(exc), code=400, reason="BadRequest")
        finally:
            ADMISSION_LATENCY.observe(time.perf_counter() - started)
        self.answer(review, request, decision)

    async def _review(self, review: Review) -> tuple[Any, Decision]:
        return await self.admission.review(
            self.clock(), operation=review.operation, subresource=review.subresource,
            body=review.body, old=review.old, dry_run=review.dry_run,
            namespace=review.namespace, name=review.name)

    async def _grew_fleet_lease(self, decision: Decision) -> bool:
        """Member mode: a pool the fleet caps was short -- grow this member's lease (the one hub
        write on the admission path, only when the lease does not cover) and decide again."""
        if self.fleet is None or decision.allowed or decision.change is None or decision.tenant is None:
            return False
        pool = FLEET_POOLS.get(decision.reason)
        if pool is None or not self.state.fleet_licenses_of(decision.tenant):
            return False
        change = decision.change
        after = change.instances_after if pool == "instances" else change.seats_after
        return await self.fleet.grow_for(decision.tenant, pool, after)

    def answer(self, review: Review, request: Any, decision: Decision) -> None:
        DECISIONS.labels(tenant=decision.tenant or "", reason=decision.reason,
                         allowed=str(decision.allowed).lower()).inc()
        review.warnings.extend(decision.warnings)
        if decision.allowed:
            return
        subject = request.workload or request.old
        name = subject.metadata.name if subject is not None else request.name
        log.info("denied %s %s/%s: %s", review.operation, request.namespace, name, decision.message)
        if not review.dry_run:
            self.events.event(subject.kind if subject is not None else "Workload", name, request.namespace,
                              "Warning", decision.reason, f"denied {review.operation.lower()}: {decision.message}",
                              self.clock(), uid=subject.metadata.uid if subject is not None else None, own=True,
                              api_version=subject.api_version if subject is not None else None)
        if decision.retry_after is not None:
            # Not a verdict on the request: the capacity could not be settled in time (held by
            # peers, or contended). 429 with Retry-After: clients retry, as with API priority.
            raise AdmissionDenied(f"{decision.reason}: {decision.message}", code=429, reason="TooManyRequests",
                                  retry_after=decision.retry_after)
        raise AdmissionDenied(f"{decision.reason}: {decision.message}", code=403, reason="Forbidden")

    async def validate_source(self, review: Review) -> None:
        """Deployments, Jobs, Pods, custom kinds: counted and gated like Workloads, in tenant
        namespaces only (the platform's own namespaces are never touched)."""
        await self.ready.wait()
        group, _, resource = review.resource
        kind = self.catalog.kind_of_resource(group, resource)
        namespace = review.namespace or ""
        if kind is None or not self.catalog.ready(group, kind) or self.state.tenant_of(namespace) is None:
            return
        started = time.perf_counter()

        def build(wait_for_owner: bool = True) -> Any:
            return source_request(
                self.state, self.catalog.of_kind(group, kind), self.owners,
                operation=review.operation, subresource=review.subresource, namespace=namespace,
                name=review.name or "", group=group, kind=kind, body=review.body, old=review.old,
                dry_run=review.dry_run, wait_for_owner=wait_for_owner)

        try:
            try:
                request = await self.admission.parse(build)
            except OwnerNotYetKnown:
                # Its controller never showed up: the reference is not believed, it counts on its own.
                request = build(wait_for_owner=False)
            if request is None:
                return
            decision = await self.admission.decide(request, self.clock())
            if await self._grew_fleet_lease(decision):
                decision = await self.admission.decide(request, self.clock())
            if self.fleet is not None and decision.allowed and decision.tenant is not None:
                self.fleet.ahead(decision.tenant)
        except InvalidInstanceCount as exc:
            DECISIONS.labels(tenant=self.state.tenant_of(namespace) or "", reason=reasons.INVALID_INSTANCE_COUNT,
                             allowed="false").inc()
            raise AdmissionDenied(f"{reasons.INVALID_INSTANCE_COUNT}: {kind} {namespace}/{review.name}: {exc}",
                                  code=403, reason="Forbidden")
        except RequestNotUnderstood as exc:
            DECISIONS.labels(tenant="", reason="BadRequest", allowed="false").inc()
            raise AdmissionDenied(str(exc), code=400, reason="BadRequest")
        finally:
            ADMISSION_LATENCY.observe(time.perf_counter() - started)
        self.answer(review, request, decision)


async def add_usage_finalizer(review: Review) -> None:
    """A new Workload carries the usage-record finalizer from birth, so even a deletion while
    the operator is down reaches it with the object's last state and its deletionTimestamp."""
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


def counting_errors(path: str, callback: ReviewCallback) -> ReviewCallback:
    """``entitle_admission_errors_total{webhook}``: reviews answered with an error rather than a
    decision (a bug, an unreachable apiserver); what the chart's EntitleWebhookErrors alerts on."""
    async def counted(review: Review) -> None:
        try:
            await callback(review)
        except AdmissionDenied:
            raise
        except Exception:
            ADMISSION_ERRORS.labels(webhook=path).inc()
            raise
    return counted
