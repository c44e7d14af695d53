"""Check 4c, ``FeatureDependencyMissing``: an enabled feature's ``requires`` are not all enabled
on the same workload."""

from entitle.domain.checks.context import CheckContext, Finding
from entitle.domain.reasons import FEATURE_DEPENDENCY_MISSING


def check(ctx: CheckContext) -> Finding | None:
    for feature in ctx.features_in_order:
        grant = ctx.entitlement.features.get(feature)
        if grant is None:  # ungranted: FeatureNotEntitled's to report
            continue
        missing = sorted(grant.requires - ctx.new.features)
        if missing:
            return Finding(FEATURE_DEPENDENCY_MISSING,
                           f"tenant {ctx.tenant}: feature {feature} requires {', '.join(missing)} "
                           "enabled on the same workload")
    return None
