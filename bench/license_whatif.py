"""The License what-if (domain.license_impact) over a large tenant, in one run:

    python bench/license_whatif.py [--workloads 10000]

Baseline, measured in the same run: one Workload admission decision (``ClusterState.decide``
on a dry-run create) -- the unit of work the what-if must not stall. Figures:

1. the what-if of lowering the tenant's cap, over N workloads with a realistic spread of
   footprints (distinct replica counts and users), total time;
2. the longest single slice between two yields (what a Workload admission waiting on the same
   event loop can be held up by), against the same scan unsliced;
3. the same with every footprint distinct (the memo cannot help), the worst case.
Ratios to the baseline decision are the figures to compare across machines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from entitle.domain.admission import CREATE  # noqa: E402
from entitle.domain.license_impact import impact  # noqa: E402
from entitle.domain.licenses import read_license  # noqa: E402
from entitle.domain.state import WorkloadRequest  # noqa: E402
from tests.unit.builders import NOW, apply, lic, state_with, wl  # noqa: E402


def build(n: int, distinct: bool):
    state = state_with(lic("big", instances={"max": 10**9}, seats={"max": 10**9}, features=[{"name": "sso"}]))
    for i in range(n):
        users = [f"user-{i}"] if distinct else [f"user-{i % 50}"]
        replicas = (i % 1000) + 1 if distinct else (i % 5) + 1
        apply(state, wl(f"w{i:06d}", replicas=replicas, users=users, features=["sso"] if i % 3 == 0 else []))
    return state


def scan(state, after) -> tuple[float, float, int]:
    """(total seconds, longest slice seconds, losing objects)."""
    steps = impact(state, "big", after, NOW)
    longest, started = 0.0, time.perf_counter()
    mark = started
    while True:
        try:
            next(steps)
        except StopIteration as done:
            now = time.perf_counter()
            longest = max(longest, now - mark)
            return now - started, longest, sum(len(t.losing) for t in done.value)
        now = time.perf_counter()
        longest, mark = max(longest, now - mark), now


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", type=int, default=10_000)
    args = parser.parse_args()
    after = read_license(lic("big", instances={"max": 10}, seats={"max": 10}))
    for distinct in (False, True):
        state = build(args.workloads, distinct)
        probe = wl("probe", replicas=1)
        decisions = []
        for _ in range(2000):
            t = time.perf_counter()
            state.decide(WorkloadRequest(CREATE, "team-a", "probe", probe, None, True), NOW)
            decisions.append(time.perf_counter() - t)
        decision = statistics.median(decisions)
        total, longest, losing = scan(state, after)
        label = "every footprint distinct" if distinct else "realistic footprints"
        print(f"{label}: {args.workloads} workloads, {losing} would turn Entitled=False")
        print(f"  baseline: one admission decision       {decision * 1e6:8.1f} us")
        print(f"  what-if total                          {total * 1e3:8.1f} ms  ({total / decision:,.0f} decisions)")
        print(f"  longest slice between yields           {longest * 1e3:8.1f} ms  ({longest / decision:,.0f} decisions)")
        print(f"  unsliced, the loop would be held       {total * 1e3:8.1f} ms  (sliced / unsliced: {longest / total:.3f})")


if __name__ == "__main__":
    main()
