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
    # The requested object (a Workload, or a sourced object's claim); its CEL view is built only
    # when a rule needs it.
    workload_model: Any = None
    _workload_view: dict[str, Any] | None = None
    # An UPDATE that leaves the spec as it was (labels, annotations, finalizers) or that touches
    # an object already being deleted: never a raise, whatever the state believes.
    metadata_only: bool = False
    # Checks append non-blocking warnings here (soft limits, bursts).
    warnings: list[str] = field(default_factory=list)

    @property
    def workload(self) -> dict[str, Any]:
        """The object as CEL's ``workload`` variable sees it: defaults applied, lists always lists."""
        if self._workload_view is None:
            self._workload_view = ({} if self.workload_model is None else
                                   self.workload_model.model_dump(by_alias=True, exclude_none=True, mode="json"))
        return self._workload_view

    @property
    def features_in_order(self) -> list[str]:
        """The workload's features in a stable order, so messages are deterministic."""
        return sorted(self.new.features)
