"""The admission decision: DESIGN's checks in order, enforcement modes, "never block a decrease"."""

from __future__ import annotations

from dataclasses import dataclass, field

from entitle.domain import reasons
from entitle.domain.checks import ENTITLEMENT_CHECKS, GATE_CHECKS, CheckContext, Finding
from entitle.domain.usage import Change, raises

CREATE, UPDATE, DELETE = "CREATE", "UPDATE", "DELETE"


@dataclass
class Decision:
    """The verdict on one request, with the reason code that decided it."""

    allowed: bool
    reason: str = reasons.ALLOWED
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    # Failed checks 4-6 that Warn / Audit enforcement let through; recorded in status and usage.
    violations: list[Finding] = field(default_factory=list)
    tenant: str | None = None
    licenses: tuple[str, ...] = ()
    change: Change | None = None
    # A refusal the client should retry (ReservationConflict): after about this many seconds.
    retry_after: int | None = None

    @property
    def needs_hold(self) -> bool:
        """Allowed and raising some pool: capacity must be reserved before answering."""
        return self.allowed and self.change is not None and self.change.raises_any

    @classmethod
    def deny(cls, finding: Finding, ctx: CheckContext, warnings: list[str]) -> Decision:
        return cls(False, finding.reason, finding.message, warnings, [], ctx.tenant, _licenses(ctx), ctx.change)


def _licenses(ctx: CheckContext) -> tuple[str, ...]:
    return ctx.entitlement.licenses if ctx.entitlement is not None else ()


def decide(ctx: CheckContext, operation: str) -> Decision:
    """Run the checks for a CREATE or UPDATE whose context the state has filled in."""
    warnings = list(ctx.entitlement.grace_warnings) if ctx.entitlement else []
    if operation == DELETE:
        return Decision(True, tenant=ctx.tenant, licenses=_licenses(ctx), warnings=warnings, change=ctx.change)
    # Never block a decrease: an update that raises no pool (scale down, removing users or
    # features, label edits) is allowed whatever the tenant's state. Switching to an unknown
    # instance kind is not a decrease: its units cannot be known.
    if operation == UPDATE and ctx.metadata_only:
        # change=None: nothing to reserve for a change that holds no new capacity.
        return Decision(True, tenant=ctx.tenant, licenses=_licenses(ctx), warnings=warnings)
    if operation == UPDATE and ctx.tenant is None and ctx.old is not None and not raises(ctx.old, ctx.new):
        # A namespace that lost its tenant label: a decrease still passes (it cannot be
        # measured against a tenant's pools, but it asks for nothing more than was there).
        return Decision(True, warnings=warnings)
    kind_changed = ctx.old is None or ctx.old.instance_kind != ctx.new.instance_kind
    if operation == UPDATE and ctx.change is not None and not ctx.change.raises_any \
            and (ctx.new.known_kind or not kind_changed):
        return Decision(True, tenant=ctx.tenant, licenses=_licenses(ctx), warnings=warnings, change=ctx.change)

    for gate in GATE_CHECKS:
        finding = gate(ctx)
        if finding is not None:
            return Decision.deny(finding, ctx, warnings)

    enforcement = ctx.entitlement.enforcement
    findings: list[Finding] = []
    for check in ENTITLEMENT_CHECKS:
        finding = check(ctx)
        if finding is None:
            continue
        if enforcement == "Enforce":
            return Decision.deny(finding, ctx, warnings + ctx.warnings)
        findings.append(finding)
    warnings += ctx.warnings
    if not findings:
        return Decision(True, tenant=ctx.tenant, licenses=_licenses(ctx), warnings=warnings, change=ctx.change)
    first = findings[0]
    if enforcement == "Warn":
        warnings += [f"{f.reason}: {f.message} (enforcement Warn: allowed)" for f in findings]
    return Decision(True, first.reason, first.message, warnings, findings, ctx.tenant, _licenses(ctx), ctx.change)
