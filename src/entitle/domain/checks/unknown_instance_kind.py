"""Check 3, ``UnknownInstanceKind``: the kind is not in the cluster's normalization table."""

from entitle.domain.checks.context import CheckContext, Finding
from entitle.domain.reasons import UNKNOWN_INSTANCE_KIND


def check(ctx: CheckContext) -> Finding | None:
    if ctx.new.known_kind:
        return None
    return Finding(UNKNOWN_INSTANCE_KIND,
                   f"tenant {ctx.tenant}: unknown instanceKind {ctx.new.instance_kind!r}")
