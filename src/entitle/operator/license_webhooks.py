"""The License webhooks (DESIGN "Licenses from a vendor"), served beside the Workload ones.

* ``/licenses-revision`` (mutating): stamps the audit trail of a spec change
  (``domain.revisions.stamp``): who, with which field manager, when, the spec hash.
* ``/licenses`` (validating): refuses what cannot work (``domain.license_review``) and answers
  every accepted CREATE/UPDATE/DELETE with its impact per tenant as warnings
  (``domain.license_impact``) -- so ``kubectl apply --dry-run=server`` is the what-if.

Thin: what to refuse, stamp and warn is the domain's. The impact scan gives the event loop
back every few hundred objects (Workload admissions are served on the same loop).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from entitle.adapters.webhook.server import AdmissionDenied, Review, ReviewCallback
from entitle.domain.license_impact import impact, printable, summary, within_budget
from entitle.domain.license_review import LicenseRefused, review_license
from entitle.domain.revisions import annotation_patch, stamp
from entitle.domain.state import ClusterState
from entitle.operator.metrics import DECISIONS

log = logging.getLogger("entitle.webhook")

LICENSES_PATH = "/licenses"
REVISION_PATH = "/licenses-revision"


def license_routes(state: ClusterState, ready: asyncio.Event, clock: Callable[[], datetime]) -> dict[str, ReviewCallback]:
    async def validate(review: Review) -> None:
        await ready.wait()
        now = clock()
        name = review.name or ""
        warnings: list[str] = []
        if review.operation == "DELETE":
            after = None
        elif review.operation in ("CREATE", "UPDATE") and isinstance(review.body, dict):
            old = review.old if isinstance(review.old, dict) else None
            try:
                reviewed = review_license(review.body, old, state.signing_keys, state.cluster_id)
            except LicenseRefused as exc:
                DECISIONS.labels(tenant="", reason=exc.code, allowed="false").inc()
                log.info("refused %s of license %s: %s", review.operation, name, exc)
                raise AdmissionDenied(str(exc), code=422, reason="Invalid") from None
            after = reviewed.read
            warnings += reviewed.warnings
        else:
            return
        steps = impact(state, name, after, now)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                tenants = done.value
                break
            await asyncio.sleep(0)   # give the loop back: Workload admissions go on meanwhile
        prefix = "what-if (dry run): " if review.dry_run else ""
        # Within the apiserver's 4096 characters of warnings (past them it cuts silently):
        # the review's own warnings, every tenant's pools, then the object lists as far as they
        # fit, and where the rest is (`entitle plan` computes the full picture itself).
        lines = [printable(w) for w in warnings] + summary(tenants)
        review.warnings.extend(within_budget(lines, prefix=prefix))

    async def stamp_revision(review: Review) -> None:
        if review.operation not in ("CREATE", "UPDATE") or not isinstance(review.body, dict):
            return
        old = review.old if isinstance(review.old, dict) and review.operation == "UPDATE" else None
        wanted = stamp(old, review.body, review.user, review.field_manager, clock())
        review.patch.extend(annotation_patch(review.body, wanted))

    return {LICENSES_PATH: validate, REVISION_PATH: stamp_revision}


TENANT_VIEW_PATH = "/tenantentitlements"
# Deletes by the control plane itself: the namespace controller emptying a namespace being
# deleted, the garbage collector. (With service-account credentials they run as kube-system
# service accounts; without, as system:kube-controller-manager.)
_CONTROL_PLANE_PREFIXES = ("system:serviceaccount:kube-system:", "system:kube-controller-manager")


@dataclass
class OwnIdentity:
    """This operator's username (SelfSubjectReview at start): the only writer of TenantEntitlements."""

    username: str | None = None


def tenant_view_guard(identity: OwnIdentity) -> dict[str, ReviewCallback]:
    """TenantEntitlements are written by the operator only: a tenant (or anyone with a broad
    grant) cannot raise what its own view says. The RBAC grants tenants read only; this is the
    second lock. Unknown own identity (SelfSubjectReview unavailable): allow, logged at start."""

    async def guard(review: Review) -> None:
        own = identity.username
        if own is None or review.user == own:
            return
        if review.operation == "DELETE" and (review.user or "").startswith(_CONTROL_PLANE_PREFIXES):
            return
        raise AdmissionDenied(f"TenantEntitlement is written by entitle only ({own}); "
                              f"{review.user or 'this user'} may read it, not {review.operation.lower()} it",
                              code=403, reason="Forbidden")

    return {TENANT_VIEW_PATH: guard}
