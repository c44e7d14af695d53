"""The live-object table both ledger backends keep: the last record of every object not yet
recorded as deleted (what start-up reconciles against the cluster). One rule for both."""

from __future__ import annotations


def live_change(record: dict, body: str) -> tuple | None:
    """What a newly stored record does to the live-object table, for either backend:
    ``("delete", kind, key)``, ``("upsert", kind, key, generation, body)``, or None."""
    data = record.get("data") or {}
    kind = {"dev.entitle.workload.v1": "workload", "dev.entitle.license.v1": "license"}.get(record.get("type"))
    if kind is None:
        return None
    key = data.get("uid") if kind == "workload" else data.get("name")
    if not key:
        return None
    if data.get("operation") == "deleted":
        return ("delete", kind, key)
    return ("upsert", kind, key, int(data.get("generation") or 0), body)
