"""Shared pieces of the API types: group/version, metadata, conditions, durations."""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from entitle.api import limits

GROUP = "entitle.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
TENANT_LABEL = "entitle.dev/tenant"


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields kept out of the way."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=False)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# What the CRD admits: at most 9 digits per part, so no admitted duration overflows anything.
DURATION_PATTERN = r"^([0-9]{1,9}(\.[0-9]{1,9})?(ms|s|m|h|d|w))+$"
# What the engine reads: any number of digits (objects stored before the bound, or written
# around the schema), saturated at limits.MAX_DURATION instead of overflowing.
_LENIENT_DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))+$"


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration ("72h", "1h30m") extended with days and weeks ("7d", "2w").

    Days and weeks are accepted because license terms are written in them; Kubernetes'
    own duration fields only go up to hours. Durations beyond ``limits.MAX_DURATION`` (far
    past the year 9999) mean "forever" and are saturated, never an error.
    """
    if isinstance(text, timedelta):
        return min(text, limits.MAX_DURATION)
    if not isinstance(text, str) or len(text) > 1024 or not re.fullmatch(_LENIENT_DURATION, text.strip()):
        raise ValueError(f"invalid duration {str(text)[:64]!r}: use e.g. 30m, 72h, 7d or 1h30m")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text.strip()))
    if not seconds < limits.MAX_DURATION.total_seconds():   # also catches inf
        return limits.MAX_DURATION
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
    Field(json_schema_extra={"pattern": DURATION_PATTERN, "maxLength": limits.MAX_DURATION_LENGTH}),
]

# RFC 3339 as the apiserver's date-time format admits it (kube-openapi strfmt.IsDateTime):
# 't'/'z' in either case, any number of fraction digits, any two-digit offset.
_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})")


def parse_time(value: Any) -> datetime:
    """A timestamp as UTC, clamped to [limits.TIME_MIN, limits.TIME_MAX].

    Year 0000, or an offset that carries a time across year 1 or 9999, are valid to the
    apiserver but not to Python's datetime: they are clamped (they mean "always"/"never").
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp needs a time zone (RFC 3339, e.g. 2026-01-31T00:00:00Z)")
        try:
            value = value.astimezone(timezone.utc)
        except OverflowError:
            return limits.TIME_MAX if value.year > 5000 else limits.TIME_MIN
        return min(max(value, limits.TIME_MIN), limits.TIME_MAX)
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC 3339 timestamp string, got {type(value).__name__}")
    if len(value) <= 64:
        return _parse_time_text(value)
    return _parse_time_uncached(value)


# Objects created together share their timestamps' text (a fleet listed at start-up: 50,000
# creationTimestamps, a few hundred distinct); datetimes are immutable, so parsing each text
# once is safe. Errors are not cached (lru_cache does not keep exceptions).
@functools.lru_cache(maxsize=4096)
def _parse_time_text(value: str) -> datetime:
    return _parse_time_uncached(value)


def _parse_time_uncached(value: str) -> datetime:
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"invalid timestamp {value[:64]!r}: use RFC 3339, e.g. 2026-01-31T00:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7) or "", match.group(8)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"invalid timestamp {value!r}: time of day out of range")
    if year == 0:
        return limits.TIME_MIN
    naive = datetime(year, month, day, hour, minute, second, int((fraction + "000000")[:6]))
    if offset in ("Z", "z"):
        shift = timedelta(0)
    else:
        sign = -1 if offset[0] == "-" else 1
        shift = sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    return limits.saturating_add(naive.replace(tzinfo=timezone.utc), -shift)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a trailing Z, the way Kubernetes writes timestamps."""
    try:
        value = value.astimezone(timezone.utc)
    except OverflowError:
        value = limits.TIME_MAX if value.year > 5000 else limits.TIME_MIN
    # Not strftime: its %Y drops the leading zeros of years before 1000.
    text = f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    return f"{text}.{value.microsecond:06d}Z" if value.microsecond else f"{text}Z"


Timestamp = Annotated[datetime, BeforeValidator(parse_time), PlainSerializer(format_time, return_type=str)]


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
