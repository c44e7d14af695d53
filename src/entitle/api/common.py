"""Shared pieces of the API types: group/version, metadata, conditions, durations."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

GROUP = "entitle.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
TENANT_LABEL = "entitle.dev/tenant"


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields kept out of the way."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=False)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))+$"


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration ("72h", "1h30m") extended with days and weeks ("7d", "2w").

    Days and weeks are accepted because license terms are written in them; Kubernetes'
    own duration fields only go up to hours.
    """
    if isinstance(text, timedelta):
        return text
    if not isinstance(text, str) or not re.fullmatch(DURATION_PATTERN, text.strip()):
        raise ValueError(f"invalid duration {text!r}: use e.g. 30m, 72h, 7d or 1h30m")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text.strip()))
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    total = int(value.total_seconds())
    if total == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts)


def _validate_duration(value: Any) -> str:
    parse_duration(value)
    return value


Duration = Annotated[
    str,
    BeforeValidator(_validate_duration),
    Field(json_schema_extra={"pattern": DURATION_PATTERN}),
]


def _to_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError("timestamp needs a time zone (RFC 3339, e.g. 2026-01-31T00:00:00Z)")
    return value


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a trailing Z, the way Kubernetes writes timestamps."""
    from datetime import timezone

    value = value.astimezone(timezone.utc)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


Timestamp = Annotated[datetime, BeforeValidator(_to_utc), PlainSerializer(format_time, return_type=str)]


class ObjectMeta(ApiModel):
    """The part of Kubernetes object metadata entitle reads."""

    name: str = Field(default="", description="Object name.")
    namespace: str | None = Field(default=None, description="Namespace of a namespaced object.")
    uid: str | None = Field(default=None, description="Object UID.")
    generation: int | None = Field(default=None, description="Spec generation.")
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    creation_timestamp: Timestamp | None = Field(default=None, alias="creationTimestamp")
    deletion_timestamp: Timestamp | None = Field(default=None, alias="deletionTimestamp")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Condition(ApiModel):
    """A status condition, per the Kubernetes API conventions (metav1.Condition)."""

    type: str = Field(description="Condition type, e.g. Valid, Active, OverCap, Entitled.")
    status: str = Field(description="True, False or Unknown.", json_schema_extra={"enum": ["True", "False", "Unknown"]})
    reason: str = Field(description="CamelCase machine-readable reason for the last transition.")
    message: str = Field(default="", description="Human-readable detail of the last transition.")
    observed_generation: int | None = Field(
        default=None, alias="observedGeneration",
        description="metadata.generation the condition was computed from.")
    last_transition_time: Timestamp | None = Field(
        default=None, alias="lastTransitionTime",
        description="When the condition last changed status.")
