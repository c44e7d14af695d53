"""Check 4a, ``FeatureNotEntitled``: a feature no active license of the tenant grants."""

from entitle.domain.checks.context import CheckContext, Finding
from entitle.domain.reasons import FEATURE_NOT_ENTITLED


def check(ctx: CheckContext) -> Finding | None:
    granted = ctx.entitlement.features
    for feature in ctx.features_in_order:
        if feature not in granted:
            return Finding(FEATURE_NOT_ENTITLED, f"tenant {ctx.tenant}: feature {feature} is not entitled")
    return None
