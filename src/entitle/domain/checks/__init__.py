"""One admission check per module, run in DESIGN's order by ``entitle.domain.admission``.

Find where a reason code is decided by its module name:

=========================  ==============================
reason                     module
=========================  ==============================
NoTenant                   no_tenant
NoActiveLicense            no_active_license
UnknownInstanceKind        unknown_instance_kind
FeatureNotEntitled         feature_not_entitled
FeatureTrialExpired        feature_trial_expired
FeatureDependencyMissing   feature_dependency_missing
FeatureLimitExceeded       feature_limit (and soft-limit warnings)
InstanceCapExceeded        instance_cap (bursts: pool_cap)
SeatCapExceeded            seat_cap (bursts: pool_cap)
RuleViolation              rule_violation
=========================  ==============================
"""

from entitle.domain.checks import (
    feature_dependency_missing, feature_limit, feature_not_entitled, feature_trial_expired,
    instance_cap, no_active_license, no_tenant, rule_violation, seat_cap, unknown_instance_kind,
)
from entitle.domain.checks.context import CheckContext, Finding

# Checks 1-3: deny whatever the enforcement.
GATE_CHECKS = (no_tenant.check, no_active_license.check, unknown_instance_kind.check)
# Checks 4-6: deny under Enforce, warn under Warn, record under Audit.
ENTITLEMENT_CHECKS = (
    feature_not_entitled.check, feature_trial_expired.check, feature_dependency_missing.check,
    feature_limit.check, instance_cap.check, seat_cap.check, rule_violation.check,
)

__all__ = ["CheckContext", "Finding", "GATE_CHECKS", "ENTITLEMENT_CHECKS"]
