"""Check 1, ``NoTenant``: the Workload's namespace carries no ``entitle.dev/tenant`` label."""

from entitle.api.common import TENANT_LABEL
from entitle.domain.checks.context import CheckContext, Finding
from entitle.domain.reasons import NO_TENANT


def check(ctx: CheckContext) -> Finding | None:
    if ctx.tenant:
        return None
    return Finding(NO_TENANT, f"namespace {ctx.namespace} has no {TENANT_LABEL} label: "
                              "workloads are only admitted in a tenant's namespace")
