"""Check 4d, ``FeatureLimitExceeded`` (hard ``limit.workloads``), and soft-limit warnings.

Like every cap, it fails only when this request raises the feature's workload count
(enables the feature) and raises it above the limit.
"""

from entitle.domain.checks.context import CheckContext, Finding
from entitle.domain.reasons import FEATURE_LIMIT_EXCEEDED


def check(ctx: CheckContext) -> Finding | None:
    for feature in ctx.change.raised_features():
        grant = ctx.entitlement.features.get(feature)
        if grant is None:  # ungranted: FeatureNotEntitled's to report
            continue
        before = ctx.change.features_before[feature]
        after = ctx.change.features_after[feature]
        if grant.limit is not None and after > grant.limit:
            return Finding(FEATURE_LIMIT_EXCEEDED,
                           f"tenant {ctx.tenant}: feature {feature} workloads {before} + {after - before} "
                           f"would exceed {grant.limit}")
        if grant.soft_limit is not None and after > grant.soft_limit:
            ctx.warnings.append(f"tenant {ctx.tenant}: feature {feature} is enabled on {after} workloads, "
                                f"above its soft limit of {grant.soft_limit}")
    return None
