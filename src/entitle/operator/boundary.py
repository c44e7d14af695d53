"""The error boundary every watch event is handled inside.

Blast radius: an object the engine cannot read, or a fault while handling it, is logged,
counted (``entitle_object_errors_total``) and reported on that object (a status condition and
an Event); it never stops start-up, a loop, or another object's processing.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable

from entitle.api.objects import metadata
from entitle.operator import metrics
from entitle.operator.events import EventQueue
from entitle.operator.marks import StatusMarks

log = logging.getLogger("entitle.controller")


class ErrorBoundary:
    def __init__(self, marks: StatusMarks, events: EventQueue, clock: Callable[[], datetime]) -> None:
        self.marks, self.events, self.clock = marks, events, clock

    def guard(self, kind: str, body: Any, handler: Callable[..., Any], *args: Any) -> Any:
        """``handler(body, *args)``; a fault is reported and None returned."""
        try:
            return handler(body, *args)
        except Exception as exc:  # noqa: BLE001 -- the boundary: report, never propagate
            meta = metadata(body)
            ns, name = meta.get("namespace"), str(meta.get("name") or "?")
            metrics.OBJECT_ERRORS.labels(kind=kind).inc()
            log.exception("handling %s %s%s failed; the object is skipped, everything else goes on",
                          kind, f"{ns}/" if ns else "", name)
            if kind == "Workload" and ns:
                self.marks.unreadable[(kind, ns, name)] = \
                    f"entitle could not process this object: {type(exc).__name__}: {exc}"
                self.marks.namespaces.add(ns)
            self.events.event(kind, name, ns, "Warning", "ProcessingFailed",
                              f"entitle could not process this object: {type(exc).__name__}: {str(exc)[:300]}",
                              self.clock(), uid=meta.get("uid"))
            return None
