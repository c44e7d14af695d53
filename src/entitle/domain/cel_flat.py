"""Rules rewritten over flat variables: the fast path for rules that all hold.

Converting a nested Python value into CEL values costs ~1–5 µs per map or key in the CEL
extension; a tenant's ``workload`` and ``tenant`` maps cost ~40 µs per request that way, most
of a decision's time (``docs/performance.md``). Scalars convert in well under a microsecond. So
each chain a rule reads from a root variable (``workload.spec.replicas``) is rewritten into one
flat identifier (``__e0``), bound per request to the value at that path.

This is only an accelerator: a combined program over the flat variables is run first, and
only its ``true`` is taken. Anything else -- false, an error, a path that is missing (its
identifier is left unbound) -- falls back to the nested evaluation, which decides and words
the denial exactly as before. A rule the rewrite cannot be sure of (``has()``, a comprehension
that rebinds a root name, an identifier that could clash) is not rewritten; its license then
has no fast path.
"""

from __future__ import annotations

from typing import Any

from entitle.domain.cel_syntax import _TOKEN

ROOTS = frozenset({"workload", "tenant", "license"})
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_PREFIX = "__e"
MISSING = object()


def flatten(text: str, names: dict[tuple[str, tuple[str, ...]], str]) -> str | None:
    """``text`` with every root chain replaced by its flat identifier (new ones added to
    ``names``: (root, path) -> identifier), or None when the rewrite is not safe."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            return None
        tokens.append((match.lastgroup or "", match.group()))
        pos = match.end()
    significant = [i for i, t in enumerate(tokens) if t[0] != "space"]
    following = {a: b for a, b in zip(significant, significant[1:])}
    preceding = {b: a for a, b in zip(significant, significant[1:])}
    for i in significant:
        kind, value = tokens[i]
        if kind == "ident" and (value == "has" or value.startswith(_PREFIX)):
            return None
        if kind == "ident" and value in _MACROS:
            # x.all(workload, ...) would rebind a root name inside the comprehension.
            j = following.get(i)
            k = following.get(j) if j is not None else None
            if j is not None and tokens[j][1] == "(" and k is not None and tokens[k][1] in ROOTS:
                return None
    out: list[str] = []
    i = 0
    while i < len(tokens):
        kind, value = tokens[i]
        before = preceding.get(i)
        if kind == "ident" and value in ROOTS and (before is None or tokens[before][1] != "."):
            path: list[str] = []
            last = i
            while True:
                dot = following.get(last)
                if dot is None or tokens[dot][1] != ".":
                    break
                field = following.get(dot)
                if field is None or tokens[field][0] != "ident":
                    break
                after = following.get(field)
                if after is not None and tokens[after][1] == "(":
                    break   # a method call on the chain so far
                path.append(tokens[field][1])
                last = field
            key = (value, tuple(path))
            out.append(names.setdefault(key, f"{_PREFIX}{len(names)}"))
            i = last + 1
            continue
        out.append(value)
        i += 1
    return "".join(out)


def lookup(value: Any, path: tuple[str, ...]) -> Any:
    for field in path:
        if not isinstance(value, dict) or field not in value:
            return MISSING
        value = value[field]
    return value


class Binder:
    """The bindings of one rule set, compiled once: ``license`` values (fixed per license
    version) bound ahead, and a generated function that reads every other path straight from
    the request's roots -- one subscript chain per binding instead of a loop of generic
    lookups per request (docs/performance.md "Engine")."""

    def __init__(self, bindings: tuple[tuple[str, str, tuple[str, ...]], ...], license_view: dict) -> None:
        self.fixed = bind(tuple(b for b in bindings if b[1] == "license"), {"license": license_view}, {})
        per_request = tuple(b for b in bindings if b[1] != "license")
        self.reads_tenant = any(root == "tenant" for _, root, _ in per_request)
        # tenant.usage.features, or a map that holds it (tenant.usage, tenant itself).
        self.reads_tenant_features = any(root == "tenant" and path[:2] == ("usage", "features")[:len(path[:2])]
                                         for _, root, path in per_request)
        self._bind = _generate(per_request)

    def __call__(self, workload: Any, tenant: Any, variables: dict[str, Any]) -> dict[str, Any]:
        variables.update(self.fixed)
        self._bind(workload, tenant, variables)
        return variables


def _generate(bindings: tuple[tuple[str, str, tuple[str, ...]], ...]) -> Any:
    """``bind(workload, tenant, out)`` for these bindings, as Python source compiled once. Every
    name is a generated identifier, every root one of ROOTS and every key an identifier token
    (``flatten``), each written with repr(): nothing of a rule's text runs as Python."""
    lines = ["def bind(workload, tenant, out):"]
    for name, root, path in bindings:
        if root not in ROOTS or not name.startswith(_PREFIX) or not all(key.isidentifier() for key in path):
            raise ValueError(f"not a flat binding: {name!r} {root!r} {path!r}")
        chain = root + "".join(f"[{key!r}]" for key in path)
        # A missing key or a non-map on the way (TypeError) leaves the name unbound, as
        # lookup() does: the fast path then errors and the nested evaluation decides.
        lines += ["    try:", f"        out[{name!r}] = {chain}", "    except (KeyError, TypeError, IndexError):",
                  "        pass"]
    lines.append("    return out")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<cel_flat binder>", "exec"), namespace)   # noqa: S102 -- see above
    return namespace["bind"]


def bind(bindings: tuple[tuple[str, str, tuple[str, ...]], ...], roots: dict[str, Any],
         variables: dict[str, Any]) -> dict[str, Any]:
    """The flat variables for one request (a missing path is left unbound: the fast path then
    errors and the nested evaluation decides)."""
    for name, root, path in bindings:
        source = roots.get(root, MISSING)
        if source is MISSING:
            continue
        value = lookup(source, path)
        if value is not MISSING:
            variables[name] = value
    return variables
