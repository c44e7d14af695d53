"""What every check sees: the request, the tenant's entitlement and usage, and the time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from entitle.domain.bursts import BurstClock
from entitle.domain.entitlement import Entitlement
from entitle.domain.licenses import ReadLicense
from entitle.domain.usage import Change, Footprint, TenantUsage


@dataclass(frozen=True)
class Finding:
    """A failed check: its reason code and a message that gives the numbers."""

    reason: str
    message: str


@dataclass
class CheckContext:
    tenant: str | None
    namespace: str
    name: str
    now: datetime
    new: Footprint
    old: Footprint | None = None
    entitlement: Entitlement | None = None
    usage: TenantUsage | None = None
    change: Change | None = None
    bursts: dict[str, BurstClock] = field(default_factory=dict)
    licenses: dict[str, ReadLicense] = field(default_factory=dict)
    workload: dict[str, Any] = field(default_factory=dict)
    # An UPDATE that leaves the spec as it was (labels, annotations, finalizers) or that touches
    # an object already being deleted: never a raise, whatever the state believes.
    metadata_only: bool = False
    # Checks append non-blocking warnings here (soft limits, bursts).
    warnings: list[str] = field(default_factory=list)

    @property
    def features_in_order(self) -> list[str]:
        """The workload's features in a stable order, so messages are deterministic."""
        return sorted(self.new.features)
