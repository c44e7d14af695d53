"""Check 2, ``NoActiveLicense``: no license of the tenant grants at this moment."""

from entitle.domain.checks.context import CheckContext, Finding
from entitle.domain.reasons import NO_ACTIVE_LICENSE


def check(ctx: CheckContext) -> Finding | None:
    if ctx.entitlement is not None and ctx.entitlement.active:
        return None
    return Finding(NO_ACTIVE_LICENSE, f"tenant {ctx.tenant}: no license is active now")
