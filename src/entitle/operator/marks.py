"""What the status writer has to look at again, marked by the watches (``operator.status``).

Every watch handler marks what its event changed; the status writer takes the marks each tick
and recomputes only those (a tick costs O(changed), not O(objects)). Objects the engine cannot
read are kept here too, with why: their status says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ObjectKey = tuple[str, "str | None", str]          # (kind, namespace, name)


@dataclass
class StatusMarks:
    # Tenants whose status (Licenses, TenantEntitlements, Workload verdicts) to recompute.
    tenants: set[str] = field(default_factory=set)
    # Namespaces whose Workloads have no tenant now: their status is written outside the
    # per-tenant pass (they must not keep showing Entitled=True).
    namespaces: set[str] = field(default_factory=set)
    # Objects the engine could not read: (kind, namespace, name) -> message, for status.
    unreadable: dict[ObjectKey, str] = field(default_factory=dict)

    def tenant(self, *tenants: str | None) -> None:
        self.tenants.update(t for t in tenants if t)

    def take_tenants(self) -> set[str]:
        taken, self.tenants = self.tenants, set()
        return taken
