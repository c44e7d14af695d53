"""Instance normalization: ``instanceKind`` -> units per instance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_WEIGHTS: Mapping[str, int] = {"container": 1, "vm": 4, "processCluster": 8}


class InvalidNormalizationTable(ValueError):
    """The configured instance table has a non-positive or non-integer weight."""


@dataclass(frozen=True)
class InstanceTable:
    """The cluster-wide weight table (Helm values ``normalization``)."""

    weights: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    def __post_init__(self) -> None:
        for kind, weight in self.weights.items():
            if not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0:
                raise InvalidNormalizationTable(
                    f"instance kind {kind!r}: weight must be a positive integer, got {weight!r}")

    def knows(self, kind: str) -> bool:
        return kind in self.weights

    def units(self, kind: str, replicas: int) -> int:
        """Units of ``replicas`` instances of ``kind``; unknown kinds hold none (they are denied)."""
        return replicas * self.weights.get(kind, 0)
