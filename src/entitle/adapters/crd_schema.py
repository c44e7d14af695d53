"""What the apiserver refuses of an object by its CRD's schema, offline: so ``entitle check``
refuses what the cluster would (a ``gracePeriod: 99999999999w`` the CRD's pattern refuses is
bad input, not a License that grants "forever").

The CRDs are the generated ones (``adapters.crdgen``): the same schema, read for the keywords a
structural schema uses -- type, properties, required, items, min/max items and length, pattern,
minimum/maximum, enum, nullable -- and the transition rules ``self == oldSelf`` (immutable
fields) against the earlier version of an object in the same stream. Other CEL rules are the
webhook's refusals (``domain.license_review``), which ``entitle check`` applies too.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_TYPES = {"string": str, "boolean": bool, "object": dict, "array": list}


@lru_cache(maxsize=None)
def schema_of(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of the generated CRD of ``kind`` (License, Workload...)."""
    from entitle.adapters.crdgen import build_crds

    for crd in build_crds().values():
        if crd["spec"]["names"]["kind"] == kind:
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    raise KeyError(kind)


def violations(schema: dict[str, Any], value: Any, path: str = "", old: Any = None) -> list[str]:
    """Every place ``value`` breaks ``schema`` (``path: what``), first ones first."""
    out: list[str] = []
    _check(schema, value, path, old, out)
    return out


def _type_ok(kind: str | None, value: Any) -> bool:
    if kind is None:
        return True
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES.get(kind, object))


def _check(schema: dict[str, Any], value: Any, path: str, old: Any, out: list[str]) -> None:
    where = path or "(root)"
    if value is None:
        if not schema.get("nullable") and schema.get("type") not in (None,):
            out.append(f"{where}: must not be null")
        return
    if not _type_ok(schema.get("type"), value):
        out.append(f"{where}: must be of type {schema.get('type')}")
        return
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: must be one of {schema['enum']}")
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{where}: at most {schema['maxLength']} characters")
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append(f"{where}: at least {schema['minLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{where}: does not match {schema['pattern']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{where}: at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{where}: at most {schema['maximum']}")
    for rule in schema.get("x-kubernetes-validations") or ():
        if rule.get("rule") == "self == oldSelf" and old is not None and value != old:
            out.append(f"{where}: {rule.get('message') or 'is immutable'}")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(f"{where}: at most {schema['maxItems']} items")
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(f"{where}: at least {schema['minItems']} items")
        for index, item in enumerate(value if "items" in schema else ()):
            _check(schema["items"], item, f"{path}[{index}]", None, out)
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name in schema.get("required") or ():
            if name not in value:
                out.append(f"{path + '.' if path else ''}{name}: required")
        for name, item in value.items():
            sub = properties.get(name) or (schema.get("additionalProperties")
                                           if isinstance(schema.get("additionalProperties"), dict) else None)
            if sub is not None:
                _check(sub, item, f"{path + '.' if path else ''}{name}", (old or {}).get(name)
                       if isinstance(old, dict) else None, out)
