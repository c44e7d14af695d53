"""Which resource serves a kind: API discovery (readable by every authenticated client)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from entitle.adapters.kube.async_api import ApiError


class KindNotServed(LookupError):
    """The apiserver serves no resource of this group, version and kind."""


@dataclass(frozen=True)
class ServedKind:
    group: str
    version: str
    kind: str
    resource: str          # plural
    namespaced: bool
    scale: bool            # has the scale subresource

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection(self, namespace: str | None = None) -> str:
        base = f"apis/{self.group}/{self.version}" if self.group else f"api/{self.version}"
        return f"{base}/namespaces/{namespace}/{self.resource}" if namespace else f"{base}/{self.resource}"


async def resolve(api: Any, group: str, version: str, kind: str) -> ServedKind:
    path = f"apis/{group}/{version}" if group else f"api/{version}"
    try:
        _, listing = await api.request("GET", path)
    except ApiError as exc:
        if exc.status == 404:
            raise KindNotServed(f"the apiserver serves no {group or 'core'}/{version}") from None
        raise
    resources = (listing or {}).get("resources") or []
    for resource in resources:
        if resource.get("kind") == kind and "/" not in resource.get("name", ""):
            name = resource["name"]
            scale = any(r.get("name") == f"{name}/scale" for r in resources)
            return ServedKind(group, version, kind, name, bool(resource.get("namespaced")), scale)
    raise KindNotServed(f"{group or 'core'}/{version} serves no kind {kind}")
