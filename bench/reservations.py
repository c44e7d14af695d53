"""Expiring reservations at fleet scale, in one run:

    python bench/reservations.py [--workloads 50000] [--held 20]

Every status tick (0.3-1 s) releases the reservations whose object never appeared
(``ClusterState.expire_reservations``). Baseline, measured in the same run: one pass over
every Workload entry (what the tick did before it visited only names that took a
reservation). The figure is the tick's cost with N Workloads of which ``--held`` hold one.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from entitle.domain.state import Reservation, footprint  # noqa: E402
from tests.unit.builders import NOW, lic, state_with, wl  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=50_000)
    parser.add_argument("--held", type=int, default=20)
    args = parser.parse_args()
    state = state_with(lic("base", instances={"max": 10**9}))
    for i in range(args.workloads):
        state.observe_workload(wl(f"w{i}", replicas=1))
    one = footprint(wl("x", replicas=1).spec, state.table)
    for i in range(args.held):
        state.add_reservation("acme", ("team-a", f"held{i}"), Reservation(one, NOW + timedelta(hours=1)))

    def every_entry() -> None:       # the baseline: a pass over every entry
        for entry in list(state.workloads.values()):
            if entry.reservations:
                entry.reservations = [r for r in entry.reservations if r.expires > NOW]

    def measure(fn, rounds: int = 50) -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            fn()
        return (time.perf_counter() - started) / rounds

    baseline = measure(every_entry)
    tick = measure(lambda: state.expire_reservations(NOW))
    print(f"{args.workloads} Workloads, {args.held} holding a reservation")
    print(f"  baseline, a pass over every entry: {baseline * 1e3:.3f} ms")
    print(f"  expire_reservations per tick:      {tick * 1e3:.3f} ms  ({baseline / tick:.0f}x less)")


if __name__ == "__main__":
    main()
