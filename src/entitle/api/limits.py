"""Bounds on every field of the API: in the CRD schemas (so ``kubectl apply`` answers before
the operator sees the object) and in the engine (objects stored before a bound existed, or
written around the schema, must still be harmless).

Each bound is chosen far above real use and low enough that arithmetic, status fields and
rule evaluation stay safe: caps sum over many licenses without leaving int64, timestamps stay
inside what Python and Go both represent, and a rule's worst case over the largest object the
schema admits is computable (``entitle.domain.cel_cost``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

# Pool caps, burst extras and feature limits: a trillion units. Summed over a million
# licenses a tenant's cap still fits int64, the type of the status fields.
MAX_COUNT = 10**12
# Replicas: the scale subresource (autoscaling/v1 Scale) carries an int32.
MAX_REPLICAS = 2**31 - 1
# Status fields are int64; anything computed larger is written as this.
INT64_MAX = 2**63 - 1

MAX_NAME_LENGTH = 253            # DNS subdomain: tenant, feature, rule, user names
MAX_USERS = 5_000                # users (and guests) per Workload
MAX_FEATURES = 64                # features per Workload and per License
MAX_RULES = 32                   # rules per License
MAX_EXPRESSION_LENGTH = 4_096    # characters of one CEL expression
MAX_EXPRESSION_DEPTH = 48        # nesting of one CEL expression (the extension overflows its stack past ~10^4)
MAX_MESSAGE_LENGTH = 1_024
MAX_DURATION_LENGTH = 32
# Concurrent sessions per tenant: every live session is an entry in the tenant's session
# object (a ConfigMap, 1 MiB), written whole on each check-out and heartbeat. 4,000 entries of
# ~150 bytes plus the recently ended ones stay well inside it (docs/sessions.md, Sizing).
MAX_SESSIONS = 4_000
MIN_SESSION_TTL, MAX_SESSION_TTL = 5, 86_400
# Kubernetes caps all annotations of an object at 256 KiB together; labels only by object size.
MAX_ANNOTATION_BYTES = 256 * 1024
MAX_ANNOTATIONS_ESTIMATE = 20_000
MAX_LABELS_ESTIMATE = 20_000

# Durations ("72h", "7d"): at most 9 digits per part. Longer than any datetime can express
# is treated as "forever" (saturated), never as an error.
MAX_DURATION = timedelta(days=3_650_000)

# The representable time range. Times outside it (year 0, offsets across year 9999) are
# clamped to it: "0001-01-01" and "9999-12-31" are common spellings of "always".
TIME_MIN = datetime(1, 1, 2, tzinfo=timezone.utc)
TIME_MAX = datetime(9999, 12, 30, tzinfo=timezone.utc)


def saturating_add(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta`` clamped to [TIME_MIN, TIME_MAX] instead of raising OverflowError."""
    try:
        result = moment + delta
    except OverflowError:
        return TIME_MAX if delta > timedelta(0) else TIME_MIN
    return min(max(result, TIME_MIN), TIME_MAX)


def clamp_int64(value: int) -> int:
    return max(-INT64_MAX - 1, min(INT64_MAX, value))
