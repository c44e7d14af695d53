"""Check 5b, ``SeatCapExceeded``: distinct named users raised above the effective max."""

from entitle.domain.checks.context import CheckContext, Finding
from entitle.domain.checks.pool_cap import check_pool
from entitle.domain.reasons import SEAT_CAP_EXCEEDED


def check(ctx: CheckContext) -> Finding | None:
    return check_pool(ctx, SEAT_CAP_EXCEEDED, "seats", ctx.entitlement.seats,
                      ctx.change.seats_before, ctx.change.seats_after)
