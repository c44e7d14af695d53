"""CEL rules: compiled once per expression, evaluated against plain dicts.

``common-expression-language`` is a Rust extension; evaluation is pure computation. Three
things about it shape this module (each measured, see tests/unit/test_rule_safety.py):

- it holds the GIL while it runs, so a rule's cost is paid by every tenant on the event loop:
  rules are costed statically (``entitle.domain.cel_cost``) and refused above the limit;
- it overflows its stack on very long or deeply nested expressions (a segmentation fault
  takes the whole operator down): length and nesting are checked before it sees a rule;
- its failures can be Rust panics (``pyo3_runtime.PanicException``, a ``BaseException``):
  every call into it is guarded, so a panic is a failed rule, never a crashed process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import cel

from entitle.api import limits
from entitle.domain.cel_cost import RULE_COST_LIMIT, estimate
from entitle.domain.cel_syntax import CelSyntaxError, parse, referenced_paths

# Exceptions that must keep propagating (shutdown, cancellation); anything else the extension
# raises -- including Rust panics, which are BaseExceptions -- is the rule's failure.
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)


class RuleCompileError(ValueError):
    """A license rule's CEL expression does not compile; the license is invalid."""


class RuleTooExpensive(RuleCompileError):
    """A rule's estimated worst-case cost exceeds the limit; the license is invalid."""


@dataclass(frozen=True)
class CompiledRule:
    license: str
    name: str
    expression: str
    message: str | None
    program: Any
    cost: int = 0
    # variable -> the paths it reads (see cel_syntax.referenced_paths): what the per-request
    # variables are projected to, so only what the rules read is converted into CEL values.
    paths: dict = field(default_factory=dict, compare=False, repr=False)

    def evaluate(self, variables: Any) -> tuple[bool, str | None]:
        """Return (holds, error) for a dict or ``cel.Context`` of variables.

        A rule that errors (e.g. a missing key) or is not boolean does not hold: fail closed.
        """
        try:
            result = self.program.execute(variables)
        except _PASS_THROUGH:
            raise
        except BaseException as exc:  # noqa: BLE001 -- Rust panics are BaseExceptions
            return False, f"evaluation error: {str(exc)[:300]}"
        if result is True:
            return True, None
        if result is False:
            return False, None
        return False, f"expression returned {type(result).__name__}, not bool"


@lru_cache(maxsize=4096)
def _compile(expression: str) -> Any:
    return cel.compile(expression)


def check_shape(expression: str) -> None:
    """Refuse what the extension cannot safely compile: too long, or nested too deep."""
    if len(expression) > limits.MAX_EXPRESSION_LENGTH:
        raise RuleCompileError(f"expression is {len(expression)} characters long; the limit is "
                               f"{limits.MAX_EXPRESSION_LENGTH}")
    depth = deepest = 0
    for char in expression:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    if deepest > limits.MAX_EXPRESSION_DEPTH:
        raise RuleCompileError(f"expression nests {deepest} levels deep; the limit is {limits.MAX_EXPRESSION_DEPTH}")


def compile_rule(license_name: str, name: str, expression: str, message: str | None) -> CompiledRule:
    check_shape(expression)
    try:
        program = _compile(expression)
    except _PASS_THROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001 -- compile errors and Rust panics alike
        raise RuleCompileError(f"rule {name!r}: {str(exc)[:500]}") from None
    try:
        tree = parse(expression)
    except CelSyntaxError as exc:
        raise RuleCompileError(f"rule {name!r}: cannot estimate its cost ({exc})") from None
    cost = estimate(expression)
    if cost > RULE_COST_LIMIT:
        raise RuleTooExpensive(
            f"rule {name!r}: estimated worst-case cost {cost:,} exceeds the limit of {RULE_COST_LIMIT:,} "
            f"(over the largest Workload the schema admits: {limits.MAX_USERS:,} users, "
            f"{limits.MAX_FEATURES} features); iterate fewer times, e.g. avoid nested comprehensions")
    return CompiledRule(license_name, name, expression, message, program, cost, referenced_paths(tree))


def combine(rules: tuple[CompiledRule, ...]) -> Any:
    """One program for all of a license's rules (``(r1) && (r2) && ...``): one evaluation when
    they all hold, the common case; None when the combination would be too long to compile safely."""
    if len(rules) < 2:
        return None
    expression = " && ".join(f"({rule.expression})" for rule in rules)
    try:
        check_shape(expression)
        return _compile(expression)
    except _PASS_THROUGH:
        raise
    except BaseException:  # noqa: BLE001 -- fall back to one evaluation per rule
        return None


def flat_program(rules: tuple[CompiledRule, ...]) -> tuple[Any, tuple] | None:
    """All rules as one program over flat variables (``cel_flat``) and its bindings, or None."""
    from entitle.domain.cel_flat import flatten

    if not rules:
        return None
    names: dict = {}
    parts = []
    for rule in rules:
        flat = flatten(rule.expression, names)
        if flat is None:
            return None
        parts.append(f"({flat})")
    try:
        check_shape(" && ".join(parts))
        program = _compile(" && ".join(parts))
    except _PASS_THROUGH:
        raise
    except BaseException:  # noqa: BLE001 -- no fast path; the nested evaluation decides
        return None
    return program, tuple((name, root, path) for (root, path), name in names.items())


def union_paths(rules: tuple[CompiledRule, ...], variable: str) -> set[tuple[str, ...]]:
    paths: set[tuple[str, ...]] = set()
    for rule in rules:
        paths |= rule.paths.get(variable, set())
    return paths


# Not a CEL identifier: the key under which projections() also keeps {license: its rule count}.
RULES_PER_LICENSE = "<rules per license>"
# rules tuple id -> (the tuple, kept alive so the id is not reused; {variable: projection}).
_PROJECTIONS: dict[int, tuple[tuple, dict[str, object]]] = {}


def projections(rules: tuple[CompiledRule, ...]) -> dict[str, object]:
    """What the rules read of each variable, compiled once per set of rules (an effective
    entitlement's rules are one tuple until a license changes): {variable: projection}."""
    cached = _PROJECTIONS.get(id(rules))
    if cached is not None and cached[0] is rules:
        return cached[1]
    from entitle.domain.cel_syntax import projection

    variables = {v for rule in rules for v in rule.paths}
    compiled: dict[str, object] = {v: projection(union_paths(rules, v)) for v in variables}
    counts: dict[str, int] = {}
    for rule in rules:
        counts[rule.license] = counts.get(rule.license, 0) + 1
    compiled[RULES_PER_LICENSE] = counts
    if len(_PROJECTIONS) > 1024:
        _PROJECTIONS.clear()
    _PROJECTIONS[id(rules)] = (rules, compiled)
    return compiled


def license_context(view: dict) -> Any:
    """A reusable evaluation context with the ``license`` variable converted once."""
    return cel.Context({"license": view})


def evaluate_all(rules: tuple[CompiledRule, ...], combined: Any, variables: dict) -> tuple[CompiledRule, str | None] | None:
    """The first rule that does not hold (and its error), or None when all hold. One context,
    converted once, for every rule; the combined program first."""
    try:
        context = cel.Context(variables)
    except _PASS_THROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001
        return rules[0], f"evaluation error: {str(exc)[:300]}"
    if combined is not None:
        try:
            if combined.execute(context) is True:
                return None
        except _PASS_THROUGH:
            raise
        except BaseException:  # noqa: BLE001 -- find which rule, below
            pass
    for rule in rules:
        holds, error = rule.evaluate(context)
        if not holds:
            return rule, error
    return None
