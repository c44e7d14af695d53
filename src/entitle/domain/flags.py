"""Entitlements as OpenFeature flags (DESIGN "Entitlements for applications"). Pure: the
OFREP endpoint is a thin adapter around :func:`evaluate` and :func:`evaluate_all`.

Flag keys:
- a feature name -> boolean: granted now by an active license and its trial not over;
- ``instances.max``, ``instances.used``, ``seats.max``, ``seats.used``, ``sessions.max``,
  ``sessions.used`` -> integers (a pool without a max is unlimited: its ``.max`` flag is not
  found; a bulk answer lists the session flags only for a tenant whose licenses sell sessions or
  that holds some).

A feature name is a flag when some License in the cluster grants it (to any tenant): a tenant
without it gets ``false``, while a name no License knows is ``FLAG_NOT_FOUND`` -- most often a
typo in the application, which deserves an error rather than a silent ``false``. (What that
reveals about other tenants: only that some License names the feature.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from entitle.domain.entitlement import Entitlement, PoolEntitlement
from entitle.domain.usage import TenantUsage

POOL_KEYS = ("instances.max", "instances.used", "seats.max", "seats.used", "sessions.max", "sessions.used")
# OpenFeature resolution reasons (https://openfeature.dev/specification/types#resolution-reason).
TARGETING_MATCH, DISABLED, DEFAULT = "TARGETING_MATCH", "DISABLED", "DEFAULT"


@dataclass(frozen=True)
class Flag:
    key: str
    value: bool | int
    reason: str
    variant: str
    metadata: dict[str, str | int | bool] = field(default_factory=dict)

    def as_ofrep(self) -> dict:
        return {"key": self.key, "value": self.value, "reason": self.reason, "variant": self.variant,
                "metadata": self.metadata}


class FlagNotFound(KeyError):
    """No flag of that key for this tenant (an unknown name, or the max of an unlimited pool)."""


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _feature(key: str, ent: Entitlement, now: datetime) -> Flag:
    grant = ent.features.get(key)
    metadata: dict[str, str | int | bool] = {}
    if ent.licenses:
        metadata["licenses"] = ",".join(ent.licenses)
    if grant is None:
        variant = "notEntitled" if ent.active else "noActiveLicense"
        return Flag(key, False, DEFAULT, variant, metadata)
    if grant.trial_ends is not None:
        metadata["trialEnds"] = _time(grant.trial_ends) or ""
    if grant.limit is not None:
        metadata["limit"] = grant.limit
    if grant.requires:
        metadata["requires"] = ",".join(sorted(grant.requires))
    if grant.trial_ends is not None and now >= grant.trial_ends:
        return Flag(key, False, DISABLED, "trialExpired", metadata)
    return Flag(key, True, TARGETING_MATCH, "trial" if grant.trial_ends is not None else "granted", metadata)


def _pool(key: str, ent: Entitlement, usage: TenantUsage) -> Flag:
    pool, what = key.split(".")
    cap: PoolEntitlement = getattr(ent, pool)
    if what == "max":
        if cap.max is None or not ent.active:
            raise FlagNotFound(key)
        metadata: dict[str, str | int | bool] = {"licenses": ",".join(ent.licenses)}
        if cap.burst_extra:
            metadata["burstExtra"] = cap.burst_extra
        return Flag(key, cap.max, TARGETING_MATCH, "limit", metadata)
    used = usage.units if pool == "instances" else getattr(usage, pool)
    return Flag(key, used, TARGETING_MATCH, "usage", {} if cap.max is None else {"max": cap.max})


def evaluate(key: str, ent: Entitlement, usage: TenantUsage, known_features: Iterable[str] | set[str],
             now: datetime) -> Flag:
    """One flag for the tenant of ``ent`` at ``now``, or :class:`FlagNotFound`."""
    if key in POOL_KEYS:
        return _pool(key, ent, usage)
    if key in ent.features or key in known_features:
        return _feature(key, ent, now)
    raise FlagNotFound(key)


def evaluate_all(ent: Entitlement, usage: TenantUsage, known_features: Iterable[str], now: datetime) -> list[Flag]:
    """Every flag the tenant has (bulk evaluation), sorted by key."""
    flags = [_feature(name, ent, now) for name in sorted(set(known_features) | set(ent.features))]
    sessions = ent.sessions.max is not None or usage.sessions > 0
    for key in POOL_KEYS:
        if key.startswith("sessions.") and not sessions:
            continue
        try:
            flags.append(_pool(key, ent, usage))
        except FlagNotFound:
            pass
    return sorted(flags, key=lambda f: f.key)
