"""Kopf handlers: watch events feed the controller (admission is served by ``operator.webhooks``).

Workloads are not watched through Kopf: the controller's own informer lists and watches them
(``operator.workload_watch``), once, from the priming list's resourceVersion."""

from __future__ import annotations

from typing import Any

import kopf

from entitle.api import GROUP, VERSION
from entitle.operator.controller import Controller


def register(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    @kopf.on.event("", "v1", "namespaces", registry=registry)
    async def namespace_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.on_namespace(dict(body), deleted=type == "DELETED")

    @kopf.on.event(GROUP, VERSION, "licenses", registry=registry)
    async def license_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.on_license(dict(body), deleted=type == "DELETED")

    @kopf.on.event(GROUP, VERSION, "instancesources", registry=registry)
    async def source_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.on_source(dict(body), deleted=type == "DELETED")
        if controller.ready.is_set():
            await controller.informers.sync()

    @kopf.on.event(GROUP, VERSION, "usageanchors", registry=registry)
    async def anchor_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        actions = controller.on_anchor(dict(body), deleted=type == "DELETED")
        if actions:
            controller.finalizers.queue(actions)   # in order, retried when they fail

