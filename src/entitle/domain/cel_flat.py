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
