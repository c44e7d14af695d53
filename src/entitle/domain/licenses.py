"""Reading one License: its rules compiled once, and where it stands in its validity window."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from entitle.api import License, LicenseSpec, limits
from entitle.api.common import format_time, parse_duration
from entitle.domain.cel_syntax import project
from entitle.domain.cel_flat import Binder
from entitle.domain.rules import (
    CompiledRule, RuleCompileError, RuleTooExpensive, combine, compile_rule, flat_program, license_context,
    union_paths,
)


class Phase(str, enum.Enum):
    PENDING = "Pending"    # before notBefore: grants nothing yet
    ACTIVE = "Active"
    GRACE = "InGrace"      # after notAfter, within gracePeriod: grants, with a warning
    EXPIRED = "Expired"    # grants nothing
    INVALID = "Invalid"    # a rule does not compile (or is too expensive): grants nothing


@dataclass(frozen=True)
class ReadLicense:
    """A License as the engine sees it: spec plus compiled rules, or the reason it is invalid."""

    name: str
    spec: LicenseSpec
    generation: int | None
    rules: tuple[CompiledRule, ...]
    invalid_reason: str | None = None
    # The reason code of Valid=False (RuleCompileError, RuleTooExpensive, InvalidSpec).
    invalid_code: str | None = None
    # The spec as CEL's ``license`` variable sees it, built once per license version.
    view: dict = field(default_factory=dict, compare=False)
    # What the rules need, prepared once per license version: ``license`` projected to the
    # paths its rules read, and the rules combined into one program (``rules.combine``).
    combined: Any = field(default=None, compare=False, repr=False)
    license_projection: Any = field(default=None, compare=False, repr=False)
    # The fast path (``cel_flat``): all rules as one program over flat variables, and what to
    # bind them to (a ``cel_flat.Binder``); None when a rule cannot be rewritten.
    flat: Any = field(default=None, compare=False, repr=False)

    @property
    def tenant(self) -> str:
        return self.spec.tenant

    @property
    def grace_ends(self) -> datetime | None:
        if self.spec.not_after is None:
            return None
        grace = parse_duration(self.spec.grace_period) if self.spec.grace_period else timedelta(0)
        # Saturates at the end of representable time: a grace of "99999999w" means forever.
        return limits.saturating_add(self.spec.not_after, grace)

    def phase(self, now: datetime) -> Phase:
        if self.invalid_reason is not None:
            return Phase.INVALID
        if self.spec.not_before is not None and now < self.spec.not_before:
            return Phase.PENDING
        # The end of representable time (a clamped 9999-12-31, a saturated grace) is "never".
        if self.spec.not_after is not None and now >= self.spec.not_after and self.spec.not_after < limits.TIME_MAX:
            grace_ends = self.grace_ends
            in_grace = grace_ends is not None and (now < grace_ends or grace_ends >= limits.TIME_MAX)
            return Phase.GRACE if in_grace else Phase.EXPIRED
        return Phase.ACTIVE

    def grants(self, now: datetime) -> bool:
        return self.phase(now) in (Phase.ACTIVE, Phase.GRACE)

    def grace_warning(self) -> str:
        return (f"license {self.name} expired at {format_time(self.spec.not_after)}; "
                f"its grace period ends at {format_time(self.grace_ends)}")

    def next_transition(self, now: datetime) -> datetime | None:
        """The next moment this license's phase changes by the clock alone (for requeueing)."""
        moments = [m for m in (self.spec.not_before, self.spec.not_after, self.grace_ends)
                   if m is not None and m > now]
        moments += [f.trial_ends for f in self.spec.features if f.trial_ends and f.trial_ends > now]
        return min(moments, default=None)


def read_license(license: License, keys: dict | None = None, cluster_id: str | None = None) -> ReadLicense:
    """Compile a license's rules; a rule that does not compile, or whose worst case costs too
    much, makes the license invalid (it grants nothing, and says why in its status). With
    trusted signing ``keys`` (key id -> Ed25519 public key), so does a missing, unknown or
    wrong signature; with the cluster's id known, so does a binding to another cluster."""
    name = license.metadata.name
    view = license.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    refusal = _signature_refusal(license, keys, cluster_id)
    if refusal is not None:
        return ReadLicense(name, license.spec, license.metadata.generation, (), refusal[1], refusal[0], view)
    compiled = []
    try:
        for rule in license.spec.rules:
            compiled.append(compile_rule(name, rule.name, rule.expression, rule.message))
    except RuleTooExpensive as exc:
        return ReadLicense(name, license.spec, license.metadata.generation, (), str(exc), "RuleTooExpensive", view)
    except RuleCompileError as exc:
        return ReadLicense(name, license.spec, license.metadata.generation, (), str(exc), "RuleCompileError", view)
    if compiled:
        try:
            license_context(view)   # can the extension take this license at all?
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 -- the extension may panic on odd values
            return ReadLicense(name, license.spec, license.metadata.generation, (),
                               f"the license cannot be given to CEL rules: {str(exc)[:300]}", "InvalidSpec", view)
    rules = tuple(compiled)
    flat = flat_program(rules)
    return ReadLicense(name, license.spec, license.metadata.generation, rules, None, None, view,
                       combine(rules), project(view, union_paths(rules, "license")) if rules else None,
                       (flat[0], Binder(flat[1], view)) if flat is not None else None)


def _signature_refusal(license: License, keys: dict | None, cluster_id: str | None) -> tuple[str, str] | None:
    """(reason code, message) when the license may not grant here, else None."""
    from entitle.domain import reasons
    from entitle.domain.signatures import cluster_mismatch, verify

    spec = license.spec.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    if keys:
        reason = verify(license.metadata.name, spec, keys)
        if reason is not None:
            key_id = (spec.get("signature") or {}).get("keyID")
            messages = {
                reasons.SIGNATURE_MISSING: "the operator trusts signing keys and this license carries no signature",
                reasons.UNKNOWN_SIGNING_KEY: f"signed with key {key_id!r}, which the operator does not trust "
                                             f"(trusted: {', '.join(sorted(keys))})",
                reasons.SIGNATURE_INVALID: f"the signature (key {key_id!r}) does not match this name and spec: "
                                           "changed after signing, or copied under another name",
            }
            return reason, messages[reason]
    if cluster_id is not None and cluster_mismatch(spec, cluster_id):
        return reasons.CLUSTER_MISMATCH, (f"bound to cluster {spec.get('clusterID')}; this cluster is {cluster_id} "
                                          "(the UID of its kube-system namespace)")
    return None


def invalid_license(name: str, tenant: str, generation: int | None, reason: str) -> ReadLicense:
    """A License the engine cannot read at all (its spec fails the models): it grants nothing,
    belongs to its tenant (when that much is readable), and its status says why."""
    return ReadLicense(name, LicenseSpec(tenant=tenant or "-"), generation, (), reason, "InvalidSpec")
