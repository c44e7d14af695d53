"""Check 5a, ``InstanceCapExceeded``: instance units raised above the effective max."""

from entitle.domain.checks.context import CheckContext, Finding
from entitle.domain.checks.pool_cap import check_pool
from entitle.domain.reasons import INSTANCE_CAP_EXCEEDED


def check(ctx: CheckContext) -> Finding | None:
    return check_pool(ctx, INSTANCE_CAP_EXCEEDED, "instances", ctx.entitlement.instances,
                      ctx.change.instances_before, ctx.change.instances_after)
