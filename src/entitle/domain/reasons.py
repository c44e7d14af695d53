"""Reason codes, in DESIGN's check order. Each code is decided in ``entitle.domain.checks``:
the module named after it (``checks/instance_cap.py`` decides ``InstanceCapExceeded``...)."""

from __future__ import annotations

ALLOWED = "Allowed"
NO_TENANT = "NoTenant"
NO_ACTIVE_LICENSE = "NoActiveLicense"
UNKNOWN_INSTANCE_KIND = "UnknownInstanceKind"
FEATURE_NOT_ENTITLED = "FeatureNotEntitled"
FEATURE_TRIAL_EXPIRED = "FeatureTrialExpired"
FEATURE_DEPENDENCY_MISSING = "FeatureDependencyMissing"
FEATURE_LIMIT_EXCEEDED = "FeatureLimitExceeded"
INSTANCE_CAP_EXCEEDED = "InstanceCapExceeded"
SEAT_CAP_EXCEEDED = "SeatCapExceeded"
RULE_VIOLATION = "RuleViolation"

# Not a check of the engine: the object's instance count (an InstanceSource's replicasPath) is
# not an integer (decided in entitle.adapters.webhook.sources; always denies).
INVALID_INSTANCE_COUNT = "InvalidInstanceCount"

# Not a check: the shared reservation could not be written after several concurrent attempts
# (decided in entitle.adapters.webhook.admission; the client should retry, as with ResourceQuota).
RESERVATION_CONFLICT = "ReservationConflict"

# Not an admission check: a session check-out on the OFREP port (entitle.domain.sessions) found
# every concurrent seat taken.
SESSION_CAP_EXCEEDED = "SessionCapExceeded"

# License validity (Valid=False reasons), not admission decisions: a signed-license check
# (entitle.domain.signatures) when the operator trusts signing keys, and the cluster binding.
SIGNATURE_MISSING = "SignatureMissing"
UNKNOWN_SIGNING_KEY = "UnknownSigningKey"
SIGNATURE_INVALID = "SignatureInvalid"
CLUSTER_MISMATCH = "ClusterMismatch"

# Checks 1-3 deny whatever the enforcement; the rest follow Enforce / Warn / Audit.
ALWAYS_DENY = frozenset({NO_TENANT, NO_ACTIVE_LICENSE, UNKNOWN_INSTANCE_KIND})

ORDER = (
    NO_TENANT, NO_ACTIVE_LICENSE, UNKNOWN_INSTANCE_KIND,
    FEATURE_NOT_ENTITLED, FEATURE_TRIAL_EXPIRED, FEATURE_DEPENDENCY_MISSING, FEATURE_LIMIT_EXCEEDED,
    INSTANCE_CAP_EXCEEDED, SEAT_CAP_EXCEEDED, RULE_VIOLATION,
)
