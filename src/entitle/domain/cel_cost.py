"""Worst-case cost of a CEL rule, estimated statically -- the apiserver's approach to CEL in
CRDs and admission policies, with sizes taken from entitle's own schema bounds.

Why: rules run on the operator's event loop, which serves every tenant's admissions, and the
CEL extension holds the GIL while it evaluates (measured: a quadratic "no duplicate users"
rule over 2,000 users blocks the process for 5.5 s). A rule whose worst case over the largest
objects the CRDs admit exceeds :data:`RULE_COST_LIMIT` makes its License invalid at compile
time, with the estimate in the message, so no Workload can ever trigger it.

A cost unit is about 0.1 us of the extension's time on the reference machine (calibrated in
tests/unit/test_rule_safety.py and docs/performance.md): an interpreter step costs 3, a
character a string function traverses 0.01, a regular expression match 600 (the extension
compiles the pattern on every call: ~50 us measured). Sizes of lists, maps and strings come
from the variables' shapes (``VARIABLES``) built from the CRD bounds in ``entitle.api.limits``;
anything unknown is assumed as large as a Kubernetes object can hold. ``map`` and ``filter``
are charged quadratically in their input, because the extension rebuilds the result list per
element (10,000 elements: 20 s measured).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from entitle.api import limits
from entitle.domain.cel_syntax import CelSyntaxError, Node, parse

# ~30 ms worst case per rule on the reference machine (docs/performance.md).
RULE_COST_LIMIT = 300_000
# All rules of one tenant's active licenses together, per admission (~100 ms).
TENANT_COST_LIMIT = 1_000_000
# Anything whose size nothing bounds: as many items as a 1.5 MiB object could hold.
UNBOUNDED = 500_000
STEP = 3                  # one interpreter step
_STRING_FACTOR = 0.01     # per character, for functions that traverse a string
_REGEX = 600              # matches(): the pattern is compiled on every call
_REBUILD = 4              # map/filter: per (element, element) pair, the result list is copied

_COMPREHENSIONS = {"all", "exists", "exists_one", "map", "filter"}
_STRING_SCANS = {"contains", "startsWith", "endsWith", "matches", "indexOf", "lastIndexOf", "split",
                 "replace", "lowerAscii", "upperAscii", "trim", "substring", "charAt", "join", "format",
                 "string", "bytes", "base64.encode", "base64.decode", "quote", "reverse"}


@dataclass(frozen=True)
class Shape:
    """What an expression evaluates to, as far as cost is concerned."""

    kind: str = "scalar"          # scalar | string | list | map | object | unknown
    size: int = 1                 # max items (list/map) or characters (string)
    elem: Shape | None = None     # list items, map values
    fields: dict[str, Shape] = field(default_factory=dict)   # object fields

    def item(self) -> Shape:
        if self.kind == "list":
            return self.elem or UNKNOWN
        if self.kind == "map":
            return self.elem or UNKNOWN
        if self.kind == "object":
            return UNKNOWN
        return UNKNOWN

    @property
    def length(self) -> int:
        return self.size if self.kind in ("string", "list", "map", "unknown") else 1


SCALAR = Shape()
UNKNOWN = Shape("unknown", UNBOUNDED)


def _string(n: int) -> Shape:
    return Shape("string", n)


def _list(n: int, elem: Shape) -> Shape:
    return Shape("list", n, elem)


def _map(n: int, value: Shape) -> Shape:
    return Shape("map", n, value)


def _object(**fields: Shape) -> Shape:
    return Shape("object", len(fields), None, fields)


def _metadata() -> Shape:
    return _object(
        name=_string(253), namespace=_string(63), uid=_string(36), generation=SCALAR,
        resourceVersion=_string(32), creationTimestamp=SCALAR, deletionTimestamp=SCALAR,
        # The apiserver caps all annotations at 256 KiB together; labels by object size.
        labels=_map(limits.MAX_LABELS_ESTIMATE, _string(63)),
        annotations=_map(limits.MAX_ANNOTATIONS_ESTIMATE, _string(limits.MAX_ANNOTATION_BYTES)))


def _names(n: int) -> Shape:
    return _list(n, _string(limits.MAX_NAME_LENGTH))


WORKLOAD = _object(
    apiVersion=_string(64), kind=_string(64), metadata=_metadata(),
    spec=_object(instanceKind=_string(limits.MAX_NAME_LENGTH), replicas=SCALAR,
                 users=_names(limits.MAX_USERS), guests=_names(limits.MAX_USERS),
                 features=_names(limits.MAX_FEATURES)),
    status=UNKNOWN)

_FEATURE_GRANT = _object(name=_string(limits.MAX_NAME_LENGTH), requires=_names(limits.MAX_FEATURES),
                         trialEnds=SCALAR, limit=_object(workloads=SCALAR), softLimit=_object(workloads=SCALAR))
_POOL = _object(max=SCALAR, burst=_object(extra=SCALAR, window=_string(limits.MAX_DURATION_LENGTH)))
LICENSE = _object(
    tenant=_string(limits.MAX_NAME_LENGTH), edition=_string(limits.MAX_NAME_LENGTH),
    region=_string(limits.MAX_NAME_LENGTH), supportLevel=_string(limits.MAX_NAME_LENGTH),
    notBefore=SCALAR, notAfter=SCALAR, gracePeriod=_string(limits.MAX_DURATION_LENGTH),
    seats=_POOL, instances=_POOL, enforcement=_string(8),
    features=_list(limits.MAX_FEATURES, _FEATURE_GRANT),
    rules=_list(limits.MAX_RULES, _object(name=_string(limits.MAX_NAME_LENGTH),
                                          expression=_string(limits.MAX_EXPRESSION_LENGTH),
                                          message=_string(limits.MAX_MESSAGE_LENGTH))))
_TENANT_FEATURES = limits.MAX_FEATURES * 16   # the union over a tenant's licenses (estimate)
TENANT = _object(
    name=_string(limits.MAX_NAME_LENGTH),
    usage=_object(instances=SCALAR, seats=SCALAR, features=_map(_TENANT_FEATURES, SCALAR)),
    entitlement=_object(instances=SCALAR, seats=SCALAR, features=_names(_TENANT_FEATURES)))

VARIABLES = {"workload": WORKLOAD, "tenant": TENANT, "license": LICENSE, "now": SCALAR}


class _Estimator:
    def __init__(self, variables: dict[str, Shape]) -> None:
        self.scopes: list[dict[str, Shape]] = [dict(variables)]

    def lookup(self, name: str) -> Shape:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return UNKNOWN

    def cost(self, node: Node) -> tuple[int, Shape]:
        op = node.op
        if op == "lit":
            kind, size = node.value
            return STEP, _string(size) if kind in ("string", "bytes") else SCALAR
        if op == "ident":
            return STEP, self.lookup(str(node.value))
        if op == "select":
            c, shape = self.cost(node.args[0])
            return c + STEP, shape.fields.get(str(node.value), UNKNOWN) if shape.kind == "object" else \
                (shape.item() if shape.kind == "map" else UNKNOWN)
        if op == "index":
            (c1, target), (c2, _) = self.cost(node.args[0]), self.cost(node.args[1])
            return c1 + c2 + STEP, target.item()
        if op == "list":
            costs = [self.cost(a) for a in node.args]
            elem = _widest([s for _, s in costs])
            return STEP + sum(c for c, _ in costs), _list(len(costs), elem)
        if op == "map":
            costs = [self.cost(a) for a in node.args]
            values = [s for _, s in costs[1::2]]
            return STEP + sum(c for c, _ in costs), _map(len(values), _widest(values))
        if op == "message":
            return STEP + sum(self.cost(a)[0] for a in node.args), UNKNOWN
        if op == "cond":
            (c0, _), (c1, s1), (c2, s2) = (self.cost(a) for a in node.args)
            return c0 + max(c1, c2), _widest([s1, s2])
        if op == "method" and node.value in _COMPREHENSIONS and len(node.args) >= 3 \
                and all(a.op == "ident" for a in node.args[1:-1]):
            return self.comprehension(node)
        if op in ("call", "method"):
            return self.call(node)
        raise CelSyntaxError(f"unknown node {op}")

    def comprehension(self, node: Node) -> tuple[int, Shape]:
        target, *rest = node.args
        c_target, shape = self.cost(target)
        n = shape.length
        names = [str(a.value) for a in rest[:-1]]
        body = rest[-1]
        macro = str(node.value)
        if macro == "map" and len(rest) == 3 and len(names) == 2:
            # map(x, filter, transform): the middle "name" is the filter predicate.
            names, predicate = names[:1], rest[1]
        else:
            predicate = None
        if shape.kind == "map":
            bound = {names[0]: _string(limits.MAX_ANNOTATION_BYTES)} if len(names) == 1 else \
                {names[0]: _string(limits.MAX_ANNOTATION_BYTES), names[1]: shape.item()}
        else:
            bound = {names[0]: shape.item()} if len(names) == 1 else {names[0]: SCALAR, names[1]: shape.item()}
        self.scopes.append(bound)
        try:
            c_body, s_body = self.cost(body)
            c_pred = self.cost(predicate)[0] if predicate is not None else 0
        finally:
            self.scopes.pop()
        total = c_target + n * (c_body + c_pred + 2 * STEP)
        if macro in ("map", "filter"):
            total += _REBUILD * n * n // 2   # the result list is rebuilt per element
            return total, _list(n, s_body if macro == "map" else shape.item())
        return total, SCALAR

    def call(self, node: Node) -> tuple[int, Shape]:
        costs = [self.cost(a) for a in node.args]
        total = STEP + sum(c for c, _ in costs)
        shapes = [s for _, s in costs]
        name = str(node.value)
        if name == "matches":
            total += _REGEX
        if node.op == "method":
            target = shapes[0]
            if name in _STRING_SCANS:
                scanned = sum(s.length for s in shapes if s.kind in ("string", "unknown"))
                total += math.ceil(scanned * _STRING_FACTOR)
                if name == "split":
                    return total, _list(target.length, target)
                if name in ("lowerAscii", "upperAscii", "trim", "replace", "substring", "format", "join",
                            "string", "quote", "reverse"):
                    return total, _string(target.length * (2 if name == "replace" else 1))
                return total, SCALAR
            if name in ("size",):
                return total, SCALAR
            if name in ("orValue", "value"):
                return total, target
            # Unknown methods (sort, distinct...): assume a pass over the target, n log n.
            n = target.length if target.kind in ("list", "map", "string", "unknown") else 1
            return total + STEP * n * max(1, math.ceil(math.log2(n + 1))), target
        if name in ("_+_",) and shapes:
            a, b = shapes
            if a.kind in ("string", "list", "unknown") or b.kind in ("string", "list", "unknown"):
                n = a.length + b.length
                total += math.ceil(n * _STRING_FACTOR) if a.kind == "string" else STEP * n
                kind = a.kind if a.kind != "unknown" else b.kind
                return total, Shape(kind, n, _widest([a.item(), b.item()]) if kind == "list" else None)
            return total, SCALAR
        if name == "_in_":
            haystack = shapes[1]
            return total + STEP * (haystack.length if haystack.kind in ("list", "unknown") else 1), SCALAR
        if name in ("_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_"):
            n = min(s.length for s in shapes)
            return total + (math.ceil(n * _STRING_FACTOR) if n > 1 else 0), SCALAR
        if name in ("size", "has", "int", "uint", "double", "bool", "dyn", "type", "timestamp", "duration"):
            return total, SCALAR if name != "dyn" else shapes[0] if shapes else SCALAR
        if name in ("string", "bytes"):
            return total + math.ceil(sum(s.length for s in shapes) * _STRING_FACTOR), \
                _string(max((s.length for s in shapes), default=1))
        if name in _STRING_SCANS:           # e.g. matches(s, re) in function form
            return total + math.ceil(sum(s.length for s in shapes if s.kind == "string") * _STRING_FACTOR), SCALAR
        # Anything else (math.greatest, sets.contains ...): a pass over its largest argument.
        n = max((s.length for s in shapes), default=1)
        return total + (STEP * n if n > 1 else 0), UNKNOWN if n > 1 else SCALAR


def _widest(shapes: list[Shape]) -> Shape:
    if not shapes:
        return UNKNOWN
    kinds = {s.kind for s in shapes}
    if len(kinds) == 1 and "object" not in kinds:
        size = max(s.size for s in shapes)
        elems = [s.elem for s in shapes if s.elem is not None]
        return Shape(shapes[0].kind, size, _widest(elems) if elems else None)
    return max(shapes, key=lambda s: s.length) if "unknown" not in kinds else UNKNOWN


def estimate(expression: str, variables: dict[str, Shape] | None = None) -> int:
    """Worst-case cost units of ``expression``; unreadable expressions count as unbounded."""
    try:
        tree = parse(expression)
        return _Estimator(variables or VARIABLES).cost(tree)[0]
    except (CelSyntaxError, RecursionError):
        return UNBOUNDED * UNBOUNDED
