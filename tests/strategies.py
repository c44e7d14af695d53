"""Hypothesis strategies generated from the CRDs' own OpenAPI schemas.

Whatever the schema admits, these can produce -- including the extremes (the largest
integers, the longest durations, year 0000 and 9999, offsets that cross them) -- so a property
over them covers exactly what a user can store with ``kubectl apply``. CEL validation rules
are not applied: objects stored before a rule existed are real too.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]


def crd_schema(kind: str) -> dict:
    for path in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    raise LookupError(kind)


_DIGITS = st.integers(0, 9).map(str)


@st.composite
def date_times(draw) -> str:
    """RFC 3339 as the apiserver's date-time format admits it, extremes favoured."""
    year = draw(st.one_of(st.sampled_from([0, 1, 1970, 2026, 2027, 9998, 9999]), st.integers(0, 9999)))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, 28 if month == 2 else 30))
    hour, minute, second = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    fraction = draw(st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=12).map(lambda d: "." + d)))
    zone = draw(st.one_of(st.sampled_from(["Z", "z", "+00:00", "-23:59", "+23:59", "+14:00", "-12:00"]),
                          st.tuples(st.sampled_from("+-"), st.integers(0, 99), st.integers(0, 99)).map(
                              lambda t: f"{t[0]}{t[1]:02d}:{t[2]:02d}")))
    t = draw(st.sampled_from("Tt"))
    return f"{year:04d}-{month:02d}-{day:02d}{t}{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"


def _string(node: dict) -> st.SearchStrategy:
    if node.get("format") == "date-time":
        return date_times()
    if "enum" in node:
        return st.sampled_from(node["enum"])
    max_length = node.get("maxLength", 64)
    if "pattern" in node:
        generated = st.from_regex(node["pattern"], fullmatch=True).filter(lambda s: len(s) <= max_length)
        if "ms|s|m|h|d|w" in node["pattern"]:   # durations: the longest ones the pattern admits too
            return st.one_of(st.sampled_from(["999999999w", "999999999.999999999w", "0s", "1ms", "72h",
                                              "999999999w999999999d"]), generated)
        return generated
    alphabet = st.characters(min_codepoint=32, max_codepoint=0x2FFF, blacklist_categories=("Cs",))
    return st.text(alphabet, min_size=node.get("minLength", 0), max_size=min(max_length, 40))


def from_schema(node: dict, overrides: dict | None = None, path: str = "") -> st.SearchStrategy:
    """A strategy for one structural-schema node; ``overrides`` replace it by dotted path."""
    overrides = overrides or {}
    if path in overrides:
        return overrides[path]
    kind = node.get("type")
    if kind == "object" and "properties" in node:
        required = set(node.get("required", ()))
        fields = {name: from_schema(sub, overrides, f"{path}.{name}".lstrip("."))
                  for name, sub in node["properties"].items()}
        strategy = st.fixed_dictionaries({k: v for k, v in fields.items() if k in required},
                                          optional={k: v for k, v in fields.items() if k not in required})
    elif kind == "object":
        values = from_schema(node.get("additionalProperties") or {"type": "string"}, overrides, f"{path}.*")
        strategy = st.dictionaries(st.text(min_size=1, max_size=12), values, max_size=4)
    elif kind == "array":
        items = from_schema(node["items"], overrides, f"{path}[]")
        max_size = min(node.get("maxItems", 6), 6)
        if node.get("x-kubernetes-list-type") == "set":
            strategy = st.lists(items, max_size=max_size, unique=True)
        elif node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            strategy = st.lists(items, max_size=max_size, unique_by=lambda i: tuple(i.get(k) for k in keys))
        else:
            strategy = st.lists(items, max_size=max_size)
    elif kind == "integer":
        low, high = node.get("minimum", -(2**63)), node.get("maximum", 2**63 - 1)
        strategy = st.one_of(st.sampled_from(sorted({low, high, min(high, low + 1), min(high, 3)})),
                             st.integers(low, high))
    elif kind == "number":
        strategy = st.floats(allow_nan=False, allow_infinity=False)
    elif kind == "boolean":
        strategy = st.booleans()
    elif kind == "string":
        strategy = _string(node)
    else:
        strategy = st.none()
    if node.get("nullable"):
        strategy = st.one_of(st.none(), strategy)
    return strategy
