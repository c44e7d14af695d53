"""What a License change would do, per tenant: the what-if of DESIGN "Licenses from a vendor".

Pure: from the in-memory picture (``ClusterState``) and the License as it would be after the
change (None: deleted), compute for each tenant it touches

* each pool's usage against its limit now and after the change, the features granted;
* the objects that would become ``Entitled=False`` -- decided by the very function the
  controller writes Workload status with (``domain.status.entitled``), so the what-if and the
  status after applying for real agree -- first 10 named, then a count;
* the objects that would become entitled again.

The webhook answers admission on the same event loop, so the scan is a generator: it yields
every ``STEP`` objects and the caller gives the loop back in between (``run_sliced``); its
result is the generator's return value. Verdicts are memoized per footprint: a tenant's
identical workloads cost one decision.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime

from entitle.domain.entitlement import Entitlement, PoolEntitlement, effective_entitlement
from entitle.domain.licenses import ReadLicense
from entitle.domain.state import ClusterState
from entitle.domain.status import entitled
from entitle.domain.usage import footprint

STEP = 200          # objects decided between two yields
NAMED = 10          # objects named per tenant, then a count
MAX_LINE = 240      # one warning line (the apiserver truncates long warnings)
# The apiserver keeps at most 4096 characters of warnings per response (k8s.io/apiserver's
# warning recorder truncates past that, then drops): the webhook's what-if stays under this,
# its own prefix included, and says where the full picture is (`entitle plan`).
WARNINGS_BUDGET = 3800


@dataclass
class TenantImpact:
    tenant: str
    before: Entitlement
    after: Entitlement
    units: int
    seats: int
    losing: list[tuple[str, str]] = field(default_factory=list)    # (object, reason) -> Entitled=False
    regaining: list[str] = field(default_factory=list)              # -> Entitled=True

    def lines(self, full: bool = False) -> list[str]:
        """The warning lines (``full``: every object, one per line, nothing cut -- what
        ``entitle plan`` prints)."""
        def pool(label: str, used: int, before: PoolEntitlement, after: PoolEntitlement) -> str:
            def cap(p: PoolEntitlement) -> str:
                return "unlimited" if p.max is None else f"{p.max}" + (f"+{p.burst_extra} burst" if p.burst_extra else "")
            over = after.max is not None and used > after.max
            return f"{label} {used} of {cap(before)} -> {cap(after)}" + (" (OVER)" if over else "")

        head = (f"tenant {self.tenant}: " + ("no active license after this change; "
                                             if not self.after.active else "")
                + pool("instances", self.units, self.before.instances, self.after.instances) + ", "
                + pool("seats", self.seats, self.before.seats, self.after.seats)
                + f", features [{','.join(sorted(self.after.features))}]")
        out = [head]
        if full:
            out.append(f"tenant {self.tenant}: {len(self.losing) or 'no'} object(s) would become Entitled=False"
                       + (":" if self.losing else ""))
            out += [f"  {obj} ({reason})" for obj, reason in self.losing]
            if self.regaining:
                out.append(f"tenant {self.tenant}: {len(self.regaining)} object(s) would become Entitled=True:")
                out += [f"  {obj}" for obj in self.regaining]
            return out
        if self.losing:
            named = ", ".join(f"{obj} ({reason})" for obj, reason in self.losing[:NAMED])
            more = f" and {len(self.losing) - NAMED} more" if len(self.losing) > NAMED else ""
            out.append(f"tenant {self.tenant}: {len(self.losing)} object(s) would become Entitled=False: {named}{more}")
        else:
            out.append(f"tenant {self.tenant}: no object would become Entitled=False")
        if self.regaining:
            named = ", ".join(self.regaining[:NAMED])
            more = f" and {len(self.regaining) - NAMED} more" if len(self.regaining) > NAMED else ""
            out.append(f"tenant {self.tenant}: {len(self.regaining)} object(s) would become Entitled=True: {named}{more}")
        return [printable(line) for line in out]


def printable(text: str) -> str:
    """One warning line: printable ASCII (HTTP header rules), at most MAX_LINE characters."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text)
    return clean if len(clean) <= MAX_LINE else clean[:MAX_LINE - 3] + "..."


def impact(state: ClusterState, name: str, after: ReadLicense | None,
           now: datetime) -> Generator[None, None, list[TenantImpact]]:
    """The impact of License ``name`` becoming ``after`` (None: deleted). A generator: see module."""
    before = state.licenses.get(name)
    tenants = sorted({lic.tenant for lic in (before, after) if lic is not None})
    out = []
    for tenant in tenants:
        current = state.licenses_of(tenant)
        changed = [lic for lic in current if lic.name != name]
        if after is not None and after.tenant == tenant:
            changed.append(after)
        ent_before = state.entitlement(tenant, now)
        ent_after = effective_entitlement(tenant, sorted(changed, key=lambda lic: lic.name), now)
        usage = state.usage[tenant]
        bursts = {p: c for (t, p), c in state.bursts.items() if t == tenant}
        result = TenantImpact(tenant, ent_before, ent_after, usage.units, usage.seats)
        memo: dict = {}
        keys = sorted(key for key, entry in state.workloads.items() if entry.tenant == tenant)
        for index, key in enumerate(keys):
            if index and index % STEP == 0:
                yield
            entry = state.workloads.get(key)
            if entry is None or entry.workload is None or entry.tenant != tenant:
                continue   # gone or moved while we gave the loop back
            fp = footprint(entry.workload.spec, state.table)
            verdicts = memo.get(fp)
            if verdicts is None:
                ok_before = entitled(tenant, fp, ent_before, usage, bursts, now)[0]
                ok_after, reason, _ = entitled(tenant, fp, ent_after, usage, bursts, now)
                verdicts = memo[fp] = (ok_before, ok_after, reason)
            label = f"{key[0]}/{key[1]}"
            if verdicts[0] and not verdicts[1]:
                result.losing.append((label, verdicts[2]))
            elif verdicts[1] and not verdicts[0]:
                result.regaining.append(label)
        out.append(result)
    return out


def within_budget(lines: list[str], budget: int = WARNINGS_BUDGET, prefix: str = "") -> list[str]:
    """The what-if's warning lines, cut to fit the apiserver's warnings budget: whole lines in
    order while they fit, then one line saying how many were left out and where they are. A
    tenant's head line (its pools) comes before any tenant's object list (see ``summary``)."""
    tail = "... {n} more line(s) not shown: `entitle plan -f <license file>` prints the full picture"
    reserve = len(prefix) + len(tail) + 8
    out, used = [], 0
    for index, line in enumerate(lines):
        cost = len(prefix) + len(line)
        last = index == len(lines) - 1
        if cost > budget - used - (0 if last else reserve):
            out.append(prefix + tail.format(n=len(lines) - index))
            return out
        out.append(prefix + line)
        used += cost
    return out


def summary(tenants: list[TenantImpact]) -> list[str]:
    """Every tenant's head line first, then the object lists: cut by :func:`within_budget`, the
    pools of every tenant survive before any long list of names."""
    lines = [t.lines() for t in tenants]
    return [ls[0] for ls in lines] + [line for ls in lines for line in ls[1:]]


def full(tenants: list[TenantImpact]) -> list[str]:
    """Everything, tenant by tenant (``entitle plan``)."""
    return [line for t in tenants for line in t.lines(full=True)]


def run_to_end(steps: Generator[None, None, list[TenantImpact]]) -> list[TenantImpact]:
    """Drive ``impact`` without giving anything back (offline use, tests)."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
