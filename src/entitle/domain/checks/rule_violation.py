"""Check 6, ``RuleViolation``: a CEL rule of an active license evaluated to false.

Variables: ``workload`` (with defaults applied), ``tenant`` (usage *including* this request,
and the effective entitlement), ``license`` (the rule's own license spec), ``now``.
"""

from entitle.domain.checks.context import CheckContext, Finding
from entitle.domain.reasons import RULE_VIOLATION


def tenant_variable(ctx: CheckContext) -> dict:
    ent = ctx.entitlement
    features = ctx.usage.features()
    for feature, count in ctx.change.features_after.items():
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


def check(ctx: CheckContext) -> Finding | None:
    if not ctx.entitlement.rules:
        return None
    base = {"workload": ctx.workload, "tenant": tenant_variable(ctx), "now": ctx.now}
    prepared: set[str] = set()
    for rule in ctx.entitlement.rules:
        variables = ctx.licenses[rule.license].cel_context
        if rule.license not in prepared:
            # Per-request variables go into the license's context once, for all its rules.
            variables.update(base)
            prepared.add(rule.license)
        holds, error = rule.evaluate(variables)
        if not holds:
            detail = error or rule.message or f"{rule.expression} is false"
            return Finding(RULE_VIOLATION, f"tenant {ctx.tenant}: rule {rule.name} of license "
                                           f"{rule.license} denied: {detail}")
    return None
