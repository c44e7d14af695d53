"""Check 4b, ``FeatureTrialExpired``: the feature is only granted by trials that have ended."""

from entitle.api.common import format_time
from entitle.domain.checks.context import CheckContext, Finding
from entitle.domain.reasons import FEATURE_TRIAL_EXPIRED


def check(ctx: CheckContext) -> Finding | None:
    for feature in ctx.features_in_order:
        grant = ctx.entitlement.features.get(feature)
        if grant is None:  # ungranted: FeatureNotEntitled's to report
            continue
        if grant.trial_ends is not None and ctx.now >= grant.trial_ends:
            return Finding(FEATURE_TRIAL_EXPIRED, f"tenant {ctx.tenant}: trial of feature {feature} "
                                                  f"ended at {format_time(grant.trial_ends)}")
    return None
