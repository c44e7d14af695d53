"""Kubernetes Events, queued by whoever notices something and posted by the status loop, so an
admission never waits on an API write."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from entitle.adapters.kube.client import event_body
from entitle.api.common import format_time

log = logging.getLogger("entitle.controller")


class EventQueue:
    # Never grow without bound while the API is unreachable.
    limit = 10_000

    def __init__(self) -> None:
        self.queued: list[dict[str, Any]] = []

    def event(self, kind: str, name: str, ns: str | None, event_type: str, reason: str, message: str,
              now: datetime, uid: str | None = None, own: bool = False, api_version: str | None = None) -> None:
        """Queue an Event. ``own``: about a request this replica decided (posted by any replica);
        otherwise about shared state (posted by the leader only, so never twice). ``uid`` makes
        the Event show under ``kubectl describe`` of the object."""
        log.info("event %s on %s %s/%s: %s", reason, kind, ns or "", name, message)
        if len(self.queued) < self.limit:
            self.queued.append({"kind": kind, "name": name, "namespace": ns, "uid": uid, "event_type": event_type,
                                "reason": reason, "message": message, "time": format_time(now), "own": own,
                                "api_version": api_version})

    async def flush(self, api: Any, only_own: bool) -> None:
        """Post what is queued (``only_own``: a standby posts only its own decisions' Events)."""
        events, self.queued = self.queued, []
        for ev in events:
            if only_own and not ev["own"]:
                continue
            body = {k: v for k, v in ev.items() if k != "own"}
            try:
                namespace, event = event_body(**body)
                await api.request("POST", f"api/v1/namespaces/{namespace}/events", event)
            except Exception as exc:  # noqa: BLE001
                log.warning("event post failed: %s", exc)
