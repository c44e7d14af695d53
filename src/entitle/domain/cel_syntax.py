"""A CEL parser for static analysis (cost estimation), not for evaluation.

The ``common-expression-language`` extension compiles and runs rules but exposes no syntax
tree, and its evaluation holds the GIL: an expensive rule stalls every admission in the
process. So rules are parsed here once, at compile time, to estimate their worst-case cost
(``entitle.domain.cel_cost``). The grammar is CEL's (github.com/google/cel-spec, langdef.md):

    Expr           = ConditionalOr ["?" ConditionalOr ":" Expr]
    ConditionalOr  = [ConditionalOr "||"] ConditionalAnd
    ConditionalAnd = [ConditionalAnd "&&"] Relation
    Relation       = [Relation Relop] Addition          Relop = < <= >= > == != in
    Addition       = [Addition ("+" | "-")] Multiplication
    Multiplication = [Multiplication ("*" | "/" | "%")] Unary
    Unary          = Member | "!" {"!"} Member | "-" {"-"} Member
    Member         = Primary | Member "." IDENT ["(" [ExprList] ")"] | Member "[" Expr "]"
    Primary        = ["."] IDENT ["(" [ExprList] ")"] | "(" Expr ")" | "[" [ExprList] [","] "]"
                   | "{" [MapInits] [","] "}" | ["."] IDENT {"." IDENT} "{" [FieldInits] [","] "}"
                   | LITERAL

The extension is the authority on what compiles; this parser runs only on expressions it
accepted, and an expression this parser cannot read is treated as unbounded (never as cheap).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class CelSyntaxError(ValueError):
    """The expression could not be read by the cost analyser."""


@dataclass(frozen=True)
class Node:
    """A syntax tree node: ``op`` names it, ``args`` are child nodes, ``value`` a literal or name.

    ops: lit (value=(kind, size)), ident (value=name), select (args=[operand], value=field),
    index (args=[operand, key]), call (value=function, args=[...]), method (value=function,
    args=[target, ...]), list (args=items), map (args=[k1, v1, k2, v2, ...]),
    message (value=type name, args=field values), cond (args=[c, a, b]).
    """

    op: str
    value: object = None
    args: tuple[Node, ...] = ()


_TOKEN = re.compile(r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>(?:[rR][bB]?|[bB][rR]?)?(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"
                                          |'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
  | (?P<number>0[xX][0-9a-fA-F]+[uU]?|(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?[uU]?)
  | (?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)
  | (?P<op>\|\||&&|==|!=|<=|>=|[<>?:!+\-*/%.,\[\](){}])
""", re.VERBOSE | re.DOTALL)


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise CelSyntaxError(f"unexpected character {text[pos]!r} at {pos}")
        pos = match.end()
        kind = match.lastgroup
        if kind != "space":
            tokens.append((kind, match.group()))
    tokens.append(("end", ""))
    return tokens


def _string_size(token: str) -> int:
    body = token.lstrip("rRbB")
    quote = 3 if body[:3] in ("'''", '"""') else 1
    return max(0, len(body) - 2 * quote)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.tokens[self.pos]
        if value is not None and token[1] != value:
            raise CelSyntaxError(f"expected {value!r}, found {token[1]!r}")
        self.pos += 1
        return token

    def accept(self, value: str) -> bool:
        if self.peek()[1] == value and self.peek()[0] in ("op", "ident"):
            self.pos += 1
            return True
        return False

    def parse(self) -> Node:
        node = self.expr()
        if self.peek()[0] != "end":
            raise CelSyntaxError(f"unexpected {self.peek()[1]!r}")
        return node

    def expr(self) -> Node:
        cond = self.binary(0)
        if self.accept("?"):
            then = self.binary(0)
            self.take(":")
            return Node("cond", args=(cond, then, self.expr()))
        return cond

    _LEVELS = (("||",), ("&&",), ("<", "<=", ">=", ">", "==", "!=", "in"), ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while self.peek()[1] in self._LEVELS[level] and self.peek()[0] in ("op", "ident"):
            op = self.take()[1]
            node = Node("call", f"_{op}_", (node, self.binary(level + 1)))
        return node

    def unary(self) -> Node:
        if self.peek()[1] in ("!", "-") and self.peek()[0] == "op":
            op = self.take()[1]
            return Node("call", f"{op}_", (self.unary(),))
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.accept("."):
                name = self.take()[1]
                if self.accept("("):
                    node = Node("method", name, (node, *self.exprs(")")))
                else:
                    node = Node("select", name, (node,))
            elif self.accept("["):
                key = self.expr()
                self.take("]")
                node = Node("index", args=(node, key))
            elif self.peek()[1] == "{" and node.op in ("ident", "select"):
                self.take("{")
                node = Node("message", _dotted(node), tuple(self.inits("}", field=True)))
            else:
                return node

    def exprs(self, close: str) -> list[Node]:
        items: list[Node] = []
        while not self.accept(close):
            items.append(self.expr())
            if not self.accept(","):
                self.take(close)
                break
        return items

    def inits(self, close: str, field: bool) -> list[Node]:
        values: list[Node] = []
        while not self.accept(close):
            key = Node("lit", ("string", 0)) if field else self.expr()
            if field:
                self.take()
            self.take(":")
            values += [key, self.expr()]
            if not self.accept(","):
                self.take(close)
                break
        return values

    def primary(self) -> Node:
        kind, text = self.take()
        if kind == "op" and text == ".":       # a leading dot: a fully qualified name
            kind, text = self.take()
        if kind == "ident":
            if text in ("true", "false"):
                return Node("lit", ("bool", 1))
            if text == "null":
                return Node("lit", ("null", 1))
            if self.accept("("):
                return Node("call", text, tuple(self.exprs(")")))
            return Node("ident", text)
        if kind == "number":
            return Node("lit", ("number", 1))
        if kind == "string":
            return Node("lit", ("bytes" if "b" in text[:2].lower() else "string", _string_size(text)))
        if text == "(":
            node = self.expr()
            self.take(")")
            return node
        if text == "[":
            return Node("list", args=tuple(self.exprs("]")))
        if text == "{":
            return Node("map", args=tuple(self.inits("}", field=False)))
        raise CelSyntaxError(f"unexpected {text!r}")


def _dotted(node: Node) -> str:
    if node.op == "ident":
        return str(node.value)
    return f"{_dotted(node.args[0])}.{node.value}"


def parse(text: str) -> Node:
    """The syntax tree of ``text``; raises :class:`CelSyntaxError` on what it cannot read."""
    try:
        return _Parser(text).parse()
    except (IndexError, RecursionError):
        raise CelSyntaxError("expression too deeply nested or truncated") from None


def referenced_paths(tree: Node) -> dict[str, set[tuple[str, ...]]]:
    """The variable paths an expression reads: ``workload.spec.replicas`` -> {"workload":
    {("spec", "replicas")}}; a variable used whole (passed to a function, compared, indexed at
    its root) -> {()}. Comprehension variables are not variables of the caller."""
    out: dict[str, set[tuple[str, ...]]] = {}

    def chain(node: Node) -> tuple[str, tuple[str, ...]] | None:
        names: list[str] = []
        while node.op == "select":
            names.append(str(node.value))
            node = node.args[0]
        if node.op == "ident":
            return str(node.value), tuple(reversed(names))
        return None

    def walk(node: Node, bound: frozenset[str]) -> None:
        if node.op in ("select", "ident"):
            found = chain(node)
            if found is not None and found[0] not in bound:
                out.setdefault(found[0], set()).add(found[1])
                return
            for arg in node.args:
                walk(arg, bound)
            return
        if node.op == "method" and node.value in ("all", "exists", "exists_one", "map", "filter") and \
                len(node.args) >= 3 and all(a.op == "ident" for a in node.args[1:-1]):
            walk(node.args[0], bound)
            names = frozenset(str(a.value) for a in node.args[1:-1])
            for arg in node.args[1:]:
                if arg.op != "ident" or arg is node.args[-1]:
                    walk(arg, bound | names)
            return
        if node.op == "call" and node.value == "has" and node.args:
            found = chain(node.args[0])
            if found is not None and found[0] not in bound:
                out.setdefault(found[0], set()).add(found[1])
                return
        for arg in node.args:
            walk(arg, bound)

    walk(tree, frozenset())
    return out


def project(value, paths: set[tuple[str, ...]]):
    """The part of ``value`` (nested dicts) those paths read; what they do not read is left out."""
    return project_by(value, projection(paths))


def projection(paths: set[tuple[str, ...]]) -> object:
    """``paths`` compiled for :func:`project_by`: True (the whole value) or {key: sub-projection}."""
    if () in paths:
        return True
    heads: dict[str, set[tuple[str, ...]]] = {}
    for path in paths:
        heads.setdefault(path[0], set()).add(path[1:])
    return {key: projection(rest) for key, rest in heads.items()}


def project_by(value, spec):
    """:func:`project` with the paths compiled once (the per-request form)."""
    if spec is True or not isinstance(value, dict):
        return value
    return {key: project_by(value[key], sub) for key, sub in spec.items() if key in value}

