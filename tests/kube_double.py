"""An in-memory stand-in for the Kubernetes API, as the operator's components use it, for unit
tests: the blocking ``KubeApi`` surface (listings at start, finalizer writes) and
``AsyncApi.request`` (status patches, Events, TenantEntitlements, ControllerRevisions, usage
anchors, the webhook configuration).

Objects live by path. It answers what the components rely on and nothing more: 404 for what is
missing, 409 for a create of what exists, merge patches (status included) and JSON patches;
a status outside the caller's ``ok`` raises ``ApiError`` as ``AsyncApi`` does. Integration and
end-to-end tests use a real kube-apiserver instead (tests/conftest.py); this double only
replaces the hand-written fakes unit tests once carried, each a little different.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from entitle.adapters.kube.async_api import ApiError

# kind -> (path prefix, plural, namespaced)
KINDS = {
    "Namespace": ("api/v1", "namespaces", False),
    "Event": ("api/v1", "events", True),
    "License": ("apis/entitle.dev/v1alpha1", "licenses", False),
    "Workload": ("apis/entitle.dev/v1alpha1", "workloads", True),
    "InstanceSource": ("apis/entitle.dev/v1alpha1", "instancesources", False),
    "UsageAnchor": ("apis/entitle.dev/v1alpha1", "usageanchors", True),
    "TenantEntitlement": ("apis/entitle.dev/v1alpha1", "tenantentitlements", True),
    "ControllerRevision": ("apis/apps/v1", "controllerrevisions", True),
    "ValidatingWebhookConfiguration": ("apis/admissionregistration.k8s.io/v1", "validatingwebhookconfigurations",
                                       False),
}
_PLURALS = {plural: (prefix, namespaced) for prefix, plural, namespaced in KINDS.values()}


def _order(item: tuple) -> tuple:
    (prefix, namespace, plural, name), _ = item
    return (prefix, plural, namespace or "", name)


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _pointer(doc: Any, path: str) -> tuple[Any, str]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    for part in parts[:-1]:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc, parts[-1]


def _json_patch(obj: dict, ops: list[dict]) -> dict:
    """RFC 6902 (add, replace, remove, test); a failed test is a 422, as the apiserver answers."""
    obj = copy.deepcopy(obj)
    for op in ops:
        parent, last = _pointer(obj, op["path"])
        if op["op"] == "test":
            here = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if here != op["value"]:
                raise ApiError(422, f"test failed at {op['path']}")
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif isinstance(parent, list):
            value = copy.deepcopy(op["value"])
            if last == "-":
                parent.append(value)
            elif op["op"] == "add":
                parent.insert(int(last), value)
            else:
                parent[int(last)] = value
        else:
            parent[last] = copy.deepcopy(op["value"])
    return obj


class KubeDouble:
    def __init__(self, *objects: dict) -> None:
        self.objects: dict[tuple[str, str | None, str, str], dict] = {}
        self.events: list[dict] = []
        # Every write (method, path) in order; finalizer writes as (action, namespace, name).
        self.calls: list[tuple] = []
        self._uids = itertools.count(1)
        self._versions = itertools.count(1)
        self._failures: list[int] = []
        for obj in objects:
            self.put(obj)

    # -- test side ----------------------------------------------------------------------------
    def put(self, obj: dict) -> dict:
        """Store an object as the apiserver would hold it (uid and resourceVersion filled in)."""
        prefix, plural, namespaced = KINDS[obj["kind"]]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[(prefix, meta.get("namespace") if namespaced else None, plural, meta["name"])] = obj
        return obj

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        prefix, plural, namespaced = KINDS[kind]
        return self.objects.get((prefix, namespace if namespaced else None, plural, name))

    def fail_next(self, writes: int, status: int = 500) -> None:
        """The next ``writes`` writes (async requests other than GET, finalizer writes) fail."""
        self._failures.extend([status] * writes)

    def _maybe_fail(self) -> None:
        if self._failures:
            raise ApiError(self._failures.pop(0), "injected failure")

    # -- the blocking KubeApi surface ---------------------------------------------------------------
    def _list(self, plural: str) -> list[dict]:
        return [copy.deepcopy(o) for (_, _, p, _), o in sorted(self.objects.items(), key=_order) if p == plural]

    def list_namespaces(self) -> list[dict]:
        return self._list("namespaces")

    def list_licenses(self) -> list[dict]:
        return self._list("licenses")

    def list_workloads(self) -> list[dict]:
        return self._list("workloads")

    def list_instance_sources(self) -> list[dict]:
        return self._list("instancesources")

    def list_usage_anchors(self) -> list[dict]:
        return self._list("usageanchors")

    def _finalizer_write(self, action: str, kind: str, namespace: str, name: str, change: Any) -> None:
        self.calls.append((action, namespace, name))
        self._maybe_fail()
        obj = self.get(kind, name, namespace)
        if obj is not None:
            change(obj["metadata"].setdefault("finalizers", []))
            obj["metadata"]["resourceVersion"] = str(next(self._versions))

    def add_workload_finalizer(self, namespace: str, name: str, finalizer: str, current: list[str],
                               resource_version: str | None) -> None:
        self._finalizer_write("add", "Workload", namespace, name,
                              lambda f: f.append(finalizer) if finalizer not in f else None)

    def remove_workload_finalizer(self, namespace: str, name: str, finalizer: str, current: list[str]) -> None:
        self._finalizer_write("remove", "Workload", namespace, name,
                              lambda f: f.remove(finalizer) if finalizer in f else None)

    def remove_anchor_finalizer(self, namespace: str, name: str, current: list[str]) -> None:
        self._finalizer_write("anchor-remove", "UsageAnchor", namespace, name,
                              lambda f: f.remove("entitle.dev/usage-record") if "entitle.dev/usage-record" in f
                              else None)

    # -- AsyncApi.request ---------------------------------------------------------------------------
    @staticmethod
    def _parse(path: str) -> tuple[str, str | None, str, str | None, str | None]:
        """(prefix, namespace, plural, name, subresource)."""
        parts = path.strip("/").split("/")
        cut = 2 if parts[0] == "api" else 3
        prefix, rest = "/".join(parts[:cut]), parts[cut:]
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
        return prefix, namespace, plural, name, sub

    async def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                      params: dict[str, str] | None = None, ok: tuple[int, ...] = (200, 201)) -> tuple[int, Any]:
        if method != "GET":
            self.calls.append((method, path))
            self._maybe_fail()
        status, answer = self._answer(method, path, body, content_type, params or {})
        if status not in ok:
            raise ApiError(status, str(answer))
        return status, copy.deepcopy(answer)

    def _answer(self, method: str, path: str, body: Any, content_type: str, params: dict) -> tuple[int, Any]:
        prefix, namespace, plural, name, sub = self._parse(path)
        namespaced = _PLURALS.get(plural, (prefix, True))[1]
        if name is None:
            return self._collection(method, prefix, namespace, plural, body, params, namespaced)
        key = (prefix, namespace if namespaced else None, plural, name)
        obj = self.objects.get(key)
        if obj is None:
            return 404, {"reason": "NotFound"}
        if method == "GET":
            return 200, obj
        if method == "DELETE":
            del self.objects[key]
            return 200, obj
        if content_type == "application/merge-patch+json":
            obj = _merge(obj, body)
        else:
            try:
                obj = _json_patch(obj, body)
            except ApiError as exc:
                return exc.status, {"reason": "Invalid"}
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[key] = obj
        return 200, obj

    def _collection(self, method: str, prefix: str, namespace: str | None, plural: str, body: Any, params: dict,
                    namespaced: bool) -> tuple[int, Any]:
        if method == "GET":
            wanted = params.get("labelSelector")
            items = [o for (p, ns, pl, _), o in sorted(self.objects.items(), key=_order)
                     if p == prefix and pl == plural and (namespace is None or ns == namespace)]
            if wanted:
                label, _, value = wanted.partition("=")
                items = [o for o in items if label in (o["metadata"].get("labels") or {})
                         and (not value or o["metadata"]["labels"][label] == value)]
            return 200, {"items": items}
        if plural == "events":
            self.events.append(body)
            return 201, body
        meta = body.setdefault("metadata", {})
        if namespace is not None:
            meta["namespace"] = namespace
        key = (prefix, namespace if namespaced else None, plural, meta["name"])
        if key in self.objects:
            return 409, {"reason": "AlreadyExists"}
        kind = next(k for k, (p, pl, _) in KINDS.items() if (p, pl) == (prefix, plural))
        return 201, self.put({**body, "kind": body.get("kind") or kind})
