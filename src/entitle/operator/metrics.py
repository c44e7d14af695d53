"""Prometheus metrics (served on ``metricsPort``, default 8080, at /metrics).

Conventions: an unlimited pool has no ``entitle_tenant_entitlement`` series (a ``-1`` would
make every usage/entitlement ratio negative) but ``entitle_tenant_unlimited 1``; series of a
feature or tenant that is gone are removed, not left at their last value.
"""

from prometheus_client import Counter, Gauge, Histogram

from entitle.domain.licenses import Phase
from entitle.domain.status import pool_figures

DECISIONS = Counter("entitle_admission_decisions_total", "Admission decisions",
                    ["tenant", "reason", "allowed"])
# Up to and past the webhook's timeout (5 s by default, 30 s at most): a slow tail must show.
ADMISSION_LATENCY = Histogram("entitle_admission_duration_seconds", "Time to decide an admission request",
                              buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                       2.5, 5, 10, 30))
ADMISSION_ERRORS = Counter("entitle_admission_errors_total",
                           "Admission reviews answered with an error instead of a decision", ["webhook"])
ADMISSION_REFUSED = Counter("entitle_admission_refused_total",
                            "Admission reviews refused unread: the client was not the apiserver (no webhook client "
                            "certificate)")
USAGE = Gauge("entitle_tenant_usage", "Tenant usage per pool (instances, seats, feature:<name>)",
              ["tenant", "pool"])
ENTITLEMENT = Gauge("entitle_tenant_entitlement", "Tenant effective max per pool (absent when unlimited)",
                    ["tenant", "pool"])
UNLIMITED = Gauge("entitle_tenant_unlimited", "1 when no active license of the tenant caps the pool",
                  ["tenant", "pool"])
BURST_BUDGET = Gauge("entitle_burst_budget_seconds", "Burst budget per calendar month (the longest window granted)",
                     ["tenant", "pool"])
LICENSE_NOT_AFTER = Gauge("entitle_license_not_after_timestamp_seconds",
                          "A license's notAfter as a Unix time (absent when it does not expire)", ["tenant", "license"])
LICENSE_IN_GRACE = Gauge("entitle_license_in_grace", "1 while a license is past notAfter and within its grace period",
                         ["tenant", "license"])
STATUS_TICK = Histogram("entitle_status_tick_seconds", "Time of one status tick (compute and write)",
                        buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
NOTICES = Counter("entitle_notices_total",
                  "Lifecycle notices (license expiring, grace started, pool near/at/over cap, bursts)", ["notice"])
LEDGER_RECORDS = Gauge("entitle_ledger_records", "Records in this replica's usage ledger")
LEDGER_APPEND_FAILURES = Counter("entitle_ledger_append_failures_total",
                                 "Failed ledger appends (a full disk, an I/O error); the records wait and are retried")
LEDGER_WAITING = Gauge("entitle_ledger_records_waiting",
                       "Records not yet durable in the ledger because appends are failing (0 when healthy)")
SINK_ERRORS = Counter("entitle_sink_errors_total", "Failed sink deliveries (retried)", ["sink"])
LEDGER_LAG = Gauge("entitle_ledger_lag_records", "Ledger records not yet delivered to a sink", ["sink"])
BURST_USED = Gauge("entitle_burst_used_seconds", "Burst budget used this month", ["tenant", "pool"])
OBJECT_ERRORS = Counter("entitle_object_errors_total",
                        "Watch events entitle could not process (the object is reported and skipped)", ["kind"])
STATUS_WRITES = Counter("entitle_status_writes_total",
                        "Status subresource writes made (paced at statusWritesPerSecond)", ["kind"])
STATUS_BACKLOG = Gauge("entitle_status_writes_pending", "Status writes computed and waiting for the pace")
LEADER = Gauge("entitle_leader", "1 while this replica holds the controller Lease (writes status, Events, sinks)")
STATUS_TENANTS_PENDING = Gauge("entitle_status_tenants_pending",
                               "Tenants whose status is still to be computed (over the per-tick budget)")
STATUS_ERRORS = Counter("entitle_status_errors_total",
                        "Status computations that failed for one tenant or tick (the others went on)")

# (tenant, pool|license) label sets last exported per gauge, so vanished ones can be removed.
_exported: dict[str, set[tuple[str, str]]] = {}


def _set(gauge: Gauge, name: str, tenant: str, values: dict[str, float], key: str = "pool") -> None:
    seen = _exported.setdefault(name, set())
    for pool, value in values.items():
        gauge.labels(tenant=tenant, **{key: pool}).set(value)
    current = {(tenant, pool) for pool in values}
    for stale in {k for k in seen if k[0] == tenant} - current:
        try:
            gauge.remove(*stale)
        except KeyError:
            pass
    _exported[name] = {k for k in seen if k[0] != tenant} | current


def observe_tenant(tenant, usage, entitlement, bursts, now) -> None:
    """Usage, effective entitlement and burst budget of one tenant, per pool."""
    pools = pool_figures(entitlement, usage)
    used = {pool: value for pool, value, _ in pools}
    used.update({f"feature:{feature}": count for feature, count in usage.features().items()})
    _set(USAGE, "usage", tenant, used)
    _set(ENTITLEMENT, "entitlement", tenant, {pool: cap.max for pool, _, cap in pools if cap.max is not None})
    _set(UNLIMITED, "unlimited", tenant, {pool: 1 for pool, _, cap in pools if cap.max is None})
    _set(BURST_USED, "burst", tenant, {pool: clock.used_at(now) for pool, clock in bursts.items()})
    _set(BURST_BUDGET, "budget", tenant, {pool: cap.burst_window.total_seconds() for pool, _, cap in pools
                                          if cap.burst_window.total_seconds() > 0})


def observe_licenses(tenant, licenses, now) -> None:
    """notAfter and grace of each license of the tenant (the chart's expiry alerts read these)."""
    _set(LICENSE_NOT_AFTER, "not_after", tenant, {lic.name: lic.spec.not_after.timestamp() for lic in licenses
                                                  if lic.spec is not None and lic.spec.not_after is not None},
         key="license")
    _set(LICENSE_IN_GRACE, "in_grace", tenant, {lic.name: 1.0 if lic.phase(now) is Phase.GRACE else 0.0
                                                for lic in licenses}, key="license")
FEATURE_EVALUATIONS = Counter("entitle_feature_evaluations_total",
                              "OpenFeature (OFREP) evaluations of feature flags by tenant applications",
                              ["tenant", "feature"])
SESSION_REQUESTS = Counter("entitle_session_requests_total",
                           "Session API requests (check-out, heartbeat, check-in) by operation and HTTP status",
                           ["operation", "code"])
SESSION_STORE_WRITES = Counter("entitle_session_store_writes_total",
                               "Writes of session objects, by outcome (ok, conflict, error)", ["outcome"])
FLEET_HUB_WRITES = Counter("entitle_fleet_hub_writes_total",
                           "Writes of this member's lease entries to the fleet hub, by outcome (ok, conflict)",
                           ["outcome"])
OFREP_REQUESTS = Counter("entitle_ofrep_requests_total", "OFREP requests by endpoint and HTTP status",
                         ["endpoint", "code"])
