"""Prometheus metrics (served on ``metricsPort``, default 8080, at /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter("entitle_admission_decisions_total", "Admission decisions",
                    ["tenant", "reason", "allowed"])
ADMISSION_LATENCY = Histogram("entitle_admission_duration_seconds", "Time to decide an admission request",
                              buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
USAGE = Gauge("entitle_tenant_usage", "Tenant usage per pool", ["tenant", "pool"])
ENTITLEMENT = Gauge("entitle_tenant_entitlement", "Tenant effective max per pool (-1 = unlimited)",
                    ["tenant", "pool"])
LEDGER_RECORDS = Gauge("entitle_ledger_records", "Records in the usage ledger")
SINK_ERRORS = Counter("entitle_sink_errors_total", "Failed sink deliveries (retried)", ["sink"])
LEDGER_LAG = Gauge("entitle_ledger_lag_records", "Ledger records not yet delivered to a sink", ["sink"])
BURST_USED = Gauge("entitle_burst_used_seconds", "Burst budget used this month", ["tenant", "pool"])


def observe_tenant(tenant, usage, entitlement, bursts, now) -> None:
    """Usage, effective entitlement and burst budget of one tenant, per pool."""
    for pool, used, cap in (("instances", usage.units, entitlement.instances), ("seats", usage.seats, entitlement.seats)):
        USAGE.labels(tenant=tenant, pool=pool).set(used)
        ENTITLEMENT.labels(tenant=tenant, pool=pool).set(-1 if cap.max is None else cap.max)
        clock = bursts.get(pool)
        if clock is not None:
            BURST_USED.labels(tenant=tenant, pool=pool).set(clock.used_at(now))
    for feature, count in usage.features().items():
        USAGE.labels(tenant=tenant, pool=f"feature:{feature}").set(count)
