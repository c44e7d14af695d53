"""Who leads: the controller Lease, held by one replica at a time. The leader writes status,
Events and revisions and runs the sinks; every replica watches, records its own ledger and
serves the webhook."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("entitle")


@dataclass
class Term:
    """Whether this replica leads now -- read by each component that acts only as leader."""

    leader: bool = False


async def leadership(term: Term, on_change: Callable[[bool], None], elector: Any, period: float = 2.0) -> None:
    """Hold (or wait for) the controller Lease; ``on_change`` on every change of leadership."""
    while True:
        try:
            leader = await asyncio.to_thread(elector.try_acquire_or_renew)
        except Exception as exc:  # API unreachable: step down until renewed
            log.warning("lease renewal failed: %s", exc)
            leader = False
        if leader != term.leader:
            log.info("controller leadership %s", "acquired" if leader else "lost")
            on_change(leader)
        await asyncio.sleep(period)
