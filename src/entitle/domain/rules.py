"""CEL rules: compiled once per expression, evaluated against plain dicts.

``common-expression-language`` is a Rust extension; evaluation is pure computation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cel


class RuleCompileError(ValueError):
    """A license rule's CEL expression does not compile; the license is invalid."""


@dataclass(frozen=True)
class CompiledRule:
    license: str
    name: str
    expression: str
    message: str | None
    program: Any

    def evaluate(self, variables: Any) -> tuple[bool, str | None]:
        """Return (holds, error) for a dict or ``cel.Context`` of variables.

        A rule that errors (e.g. a missing key) or is not boolean does not hold: fail closed.
        """
        try:
            result = self.program.execute(variables)
        except Exception as exc:  # the extension raises plain RuntimeError/ValueError
            return False, f"evaluation error: {exc}"
        if result is True:
            return True, None
        if result is False:
            return False, None
        return False, f"expression returned {type(result).__name__}, not bool"


@lru_cache(maxsize=4096)
def _compile(expression: str) -> Any:
    return cel.compile(expression)


def compile_rule(license_name: str, name: str, expression: str, message: str | None) -> CompiledRule:
    try:
        program = _compile(expression)
    except Exception as exc:
        raise RuleCompileError(f"rule {name!r}: {exc}") from None
    return CompiledRule(license_name, name, expression, message, program)


def license_context(view: dict) -> Any:
    """A reusable evaluation context with the ``license`` variable converted once."""
    return cel.Context({"license": view})
