"""Check 6, ``RuleViolation``: a CEL rule of an active license evaluated to false.

Variables: ``workload`` (with defaults applied), ``tenant`` (usage *including* this request,
and the effective entitlement), ``license`` (the rule's own license spec), ``now``.
"""

from entitle.api import limits
from entitle.domain.cel_cost import TENANT_COST_LIMIT
from entitle.domain.cel_syntax import project_by
from entitle.domain.rules import RULES_PER_LICENSE, evaluate_all, projections
from entitle.domain.checks.context import CheckContext, Finding
from entitle.domain.reasons import RULE_VIOLATION


def tenant_variable(ctx: CheckContext, with_features: bool = True) -> dict:
    """``tenant`` as rules see it; ``with_features=False`` (the fast path, for rules that do not
    read ``tenant.usage.features``) skips copying the tenant's feature counts."""
    ent = ctx.entitlement
    features = ctx.usage.features() if with_features else {}
    for feature, count in ctx.change.features_after.items() if with_features else ():
        if count > 0:
            features[feature] = count
        else:
            features.pop(feature, None)
    return {
        "name": ctx.tenant,
        "usage": {"instances": ctx.change.instances_after, "seats": ctx.change.seats_after,
                  "features": features},
        "entitlement": {"instances": ent.instances.max, "seats": ent.seats.max,
                        "features": list(ent.features)},
    }


def _oversized(ctx: CheckContext) -> str | None:
    """A workload beyond the schema's bounds (stored before they existed) would void the cost
    estimates every rule was admitted with: its rules are not run, it fails closed."""
    if len(ctx.new.users) > limits.MAX_USERS:
        return f"{len(ctx.new.users)} users (limit {limits.MAX_USERS})"
    if len(ctx.new.features) > limits.MAX_FEATURES:
        return f"{len(ctx.new.features)} features (limit {limits.MAX_FEATURES})"
    guests = ((ctx.workload.get("spec") or {}).get("guests")) or ()
    if len(guests) > limits.MAX_USERS:
        return f"{len(guests)} guests (limit {limits.MAX_USERS})"
    return None


def _all_hold_fast(ctx: CheckContext, rules: tuple) -> bool:
    """True when every license's rules hold on the flat fast path (``cel_flat``); False means
    "not known" -- the nested evaluation below decides and words the denial."""
    reads = projections(rules)
    uses_now = "now" in reads
    tenant = None
    for name, count in reads[RULES_PER_LICENSE].items():
        read = ctx.licenses[name]
        if read.flat is None or len(read.rules) != count:
            return False
        program, binder = read.flat
        if tenant is None and binder.reads_tenant:
            tenant = tenant_variable(ctx, binder.reads_tenant_features)
        elif tenant is not None and binder.reads_tenant_features and not tenant["usage"]["features"]:
            tenant = tenant_variable(ctx)
        variables = binder(ctx.workload, tenant, {"now": ctx.now} if uses_now else {})
        try:
            if program.execute(variables) is not True:
                return False
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except BaseException:  # noqa: BLE001 -- a missing path, a type error: decide the slow way
            return False
    return True


def check(ctx: CheckContext) -> Finding | None:
    if not ctx.entitlement.rules:
        return None
    total = sum(rule.cost for rule in ctx.entitlement.rules)
    if total > TENANT_COST_LIMIT:
        # Each license is within its own limit, but together they are not: deny rather than
        # stall the event loop every tenant's admissions share.
        return Finding(RULE_VIOLATION, f"tenant {ctx.tenant}: the rules of its active licenses together have an "
                                       f"estimated worst-case cost of {total:,}, above the limit of "
                                       f"{TENANT_COST_LIMIT:,}; no rule was evaluated")
    oversized = _oversized(ctx)
    if oversized:
        return Finding(RULE_VIOLATION, f"tenant {ctx.tenant}: the workload has {oversized}; "
                                       "its rules are not evaluated")
    # Only what the rules read is converted into CEL values (the cost of an evaluation is
    # mostly that conversion): the variables are projected to the paths the rules name.
    rules = ctx.entitlement.rules
    if _all_hold_fast(ctx, rules):
        return None
    reads = projections(rules)
    workload = project_by(ctx.workload, reads["workload"]) if "workload" in reads else None
    tenant = project_by(tenant_variable(ctx), reads["tenant"]) if "tenant" in reads else None
    by_license: dict[str, list] = {}
    for rule in rules:
        by_license.setdefault(rule.license, []).append(rule)
    for name, own in by_license.items():
        read = ctx.licenses[name]
        variables = {"now": ctx.now} if "now" in reads else {}
        if workload is not None:
            variables["workload"] = workload
        if tenant is not None:
            variables["tenant"] = tenant
        if read.license_projection is not None and any("license" in r.paths for r in own):
            variables["license"] = read.license_projection
        failed = evaluate_all(tuple(own), read.combined if len(own) == len(read.rules) else None, variables)
        if failed is not None:
            rule, error = failed
            detail = error or rule.message or f"{rule.expression} is false"
            return Finding(RULE_VIOLATION, f"tenant {ctx.tenant}: rule {rule.name} of license "
                                           f"{rule.license} denied: {detail}")
    return None
