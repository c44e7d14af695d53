"""The live-object table both ledger backends keep: the last record of every object not yet
recorded as deleted (what start-up reconciles against the cluster). One rule for both."""

from __future__ import annotations


def live_change(record: dict, body: str) -> tuple | None:
    """What a newly stored record does to the live-object table, for either backend:
    ``("delete", kind, key)``, ``("upsert", kind, key, generation, body)``, or None."""
    data = record.get("data") or {}
    kind = {"dev.entitle.workload.v1": "workload", "dev.entitle.license.v1": "license",
            "dev.entitle.session.v1": "session"}.get(record.get("type"))
    if kind is None:
        return None
    if kind == "session":       # live from check-out to its end (operator/sessions: reconcile_vanished)
        tenant, session = data.get("tenant"), data.get("session")
        if not tenant or not session:
            return None
        if data.get("operation") == "checkout":
            return ("upsert", kind, f"{tenant}/{session}", 0, body)
        return ("delete", kind, f"{tenant}/{session}")
    key = data.get("uid") if kind == "workload" else data.get("name")
    if not key:
        return None
    if data.get("operation") == "deleted":
        return ("delete", kind, key)
    return ("upsert", kind, key, int(data.get("generation") or 0), body)
