"""Stacking: all active licenses of a tenant combine into its effective entitlement."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from entitle.api import limits
from entitle.api.common import parse_duration
from entitle.domain.licenses import Phase, ReadLicense
from entitle.domain.rules import CompiledRule

_STRICTNESS = {"Audit": 0, "Warn": 1, "Enforce": 2}


@dataclass(frozen=True)
class PoolEntitlement:
    """A pool's effective cap; ``max is None`` means unlimited."""

    max: int | None = None
    burst_extra: int = 0
    burst_window: timedelta = timedelta(0)

    @property
    def hard_limit(self) -> int | None:
        return None if self.max is None else self.max + self.burst_extra

    def as_record(self) -> dict:
        return {"max": self.max, "burstExtra": self.burst_extra}


@dataclass(frozen=True)
class SessionEntitlement(PoolEntitlement):
    """The concurrent-session pool, with how a session lives: ``ttl_seconds`` without a renewal
    and whether a user's sessions share one seat (``per_user``)."""

    ttl_seconds: int = 120
    per_user: bool = True

    def as_record(self) -> dict:
        return {**super().as_record(), "ttlSeconds": self.ttl_seconds, "perUser": self.per_user}


@dataclass(frozen=True)
class FeatureEntitlement:
    name: str
    requires: frozenset[str] = frozenset()
    trial_ends: datetime | None = None   # None: not a trial (never ends)
    limit: int | None = None             # None: unlimited
    soft_limit: int | None = None


@dataclass(frozen=True)
class Entitlement:
    tenant: str
    licenses: tuple[str, ...] = ()
    instances: PoolEntitlement = PoolEntitlement()
    seats: PoolEntitlement = PoolEntitlement()
    features: dict[str, FeatureEntitlement] = field(default_factory=dict)
    rules: tuple[CompiledRule, ...] = ()
    enforcement: str = "Enforce"
    grace_warnings: tuple[str, ...] = ()
    # Last, so positional construction of the fields above stays as it was.
    sessions: SessionEntitlement = SessionEntitlement()

    @property
    def active(self) -> bool:
        return bool(self.licenses)

    def as_record(self) -> dict:
        """The ``entitlement`` object of ``dev.entitle.license.v1`` records."""
        out = {"instances": self.instances.as_record(), "seats": self.seats.as_record(),
               "features": sorted(self.features)}
        if self.sessions.max is not None:    # only where sold: other tenants' records are unchanged
            out["sessions"] = self.sessions.as_record()
        return out


def _stack_pool(pools) -> PoolEntitlement:
    pools = [p for p in pools if p is not None]
    if not pools:
        return PoolEntitlement()
    extra = sum(p.burst.extra for p in pools if p.burst)
    window = max((parse_duration(p.burst.window) for p in pools if p.burst), default=timedelta(0))
    return PoolEntitlement(sum(p.max for p in pools), extra, window)


def _stack_sessions(pools) -> SessionEntitlement:
    """Sessions stack like seats; of the session terms the most permissive wins, as for features:
    the longest ``ttlSeconds`` (a slow heartbeat is not cut off) and ``perUser`` when any license
    says so (a user's second session shares the seat)."""
    pools = [p for p in pools if p is not None]
    if not pools:
        return SessionEntitlement()
    base = _stack_pool(pools)
    return SessionEntitlement(min(base.max, limits.MAX_SESSIONS), base.burst_extra, base.burst_window,
                              max(p.ttl_seconds for p in pools), any(p.per_user for p in pools))


def _more_permissive(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else max(a, b)


def _stack_feature(a: FeatureEntitlement, b: FeatureEntitlement) -> FeatureEntitlement:
    trial = None if a.trial_ends is None or b.trial_ends is None else max(a.trial_ends, b.trial_ends)
    return FeatureEntitlement(
        a.name,
        # Fewer prerequisites is the more permissive grant.
        requires=a.requires & b.requires,
        trial_ends=trial,
        limit=_more_permissive(a.limit, b.limit),
        soft_limit=_more_permissive(a.soft_limit, b.soft_limit),
    )


def effective_entitlement(tenant: str, licenses: Iterable[ReadLicense], now: datetime) -> Entitlement:
    """Combine the tenant's licenses that grant at ``now``. Order of ``licenses`` never matters."""
    granting = sorted((lic for lic in licenses if lic.tenant == tenant and lic.grants(now)),
                      key=lambda lic: lic.name)
    if not granting:
        return Entitlement(tenant)
    features: dict[str, FeatureEntitlement] = {}
    for lic in granting:
        for grant in lic.spec.features:
            feature = FeatureEntitlement(
                grant.name, frozenset(grant.requires), grant.trial_ends,
                grant.limit.workloads if grant.limit else None,
                grant.soft_limit.workloads if grant.soft_limit else None)
            features[grant.name] = _stack_feature(features[grant.name], feature) if grant.name in features else feature
    enforcement = max((lic.spec.enforcement for lic in granting), key=_STRICTNESS.__getitem__)
    return Entitlement(
        tenant=tenant,
        licenses=tuple(lic.name for lic in granting),
        instances=_stack_pool(lic.spec.instances for lic in granting),
        seats=_stack_pool(lic.spec.seats for lic in granting),
        sessions=_stack_sessions(lic.spec.sessions for lic in granting),
        features=dict(sorted(features.items())),
        rules=tuple(rule for lic in granting for rule in lic.rules),
        enforcement=enforcement,
        grace_warnings=tuple(lic.grace_warning() for lic in granting if lic.phase(now) is Phase.GRACE),
    )
