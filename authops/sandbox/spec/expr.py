"""The spec expression language: tokenizer, syntax tree and recursive-descent parser.

Expressions are data, never code: this module reads them character by character into a
small tree (no `eval`, no Python `ast`), and `check.py` types and compiles that tree.

Grammar (keywords are case-insensitive; positions in errors are 1-based characters)::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | cmp
    cmp     := sum [ cmpop sum
                   | "is" ["not"] "null"
                   | ["not"] "in" "(" item ("," item)* ")"
                   | ["not"] "between" sum "and" sum ]          -- comparisons do not chain
    cmpop   := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/" | "%") unary)*
    unary   := "-" unary | primary
    primary := NUMBER | STRING | "date" STRING | "timestamp" STRING | "true" | "false" | "null"
             | ":" NAME                                          -- a parameter of the spec
             | "case" ("when" expr "then" expr)+ ["else" expr] "end"
             | NAME "(" [arg ("," arg)*] ")"                     -- one of FUNCTIONS
             | NAME ["." NAME]                                   -- column, or input.field
             | "(" expr ")"
    arg     := expr | "[" item ("," item)* "]"                   -- lists only as arguments
    item    := ["-"] NUMBER | STRING | "date" STRING | "timestamp" STRING | "true" | "false" | ":" NAME
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from authops.sandbox.spec.errors import ExprError
from authops.sandbox.spec.lexer import FUNCTIONS, KEYWORDS, MAX_DEPTH, Token, tokenize


# --- syntax tree -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    pos: int


@dataclass(frozen=True)
class Lit(Node):
    kind: str  # int float string date timestamp bool null
    value: Any


@dataclass(frozen=True)
class ListLit(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Col(Node):
    alias: str | None
    name: str

    @property
    def text(self) -> str:
        return f"{self.alias}.{self.name}" if self.alias else self.name


@dataclass(frozen=True)
class Param(Node):
    name: str


@dataclass(frozen=True)
class Unary(Node):
    op: str  # "-" or "not"
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str  # + - * / % = != < <= > >= and or
    left: Node
    right: Node


@dataclass(frozen=True)
class IsNull(Node):
    operand: Node
    negated: bool


@dataclass(frozen=True)
class InList(Node):
    operand: Node
    items: tuple[Node, ...]
    negated: bool


@dataclass(frozen=True)
class Between(Node):
    operand: Node
    low: Node
    high: Node
    negated: bool


@dataclass(frozen=True)
class Call(Node):
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Case(Node):
    whens: tuple[tuple[Node, Node], ...]
    otherwise: Node | None


# --- parser ----------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = tokenize(text)
        self.i = 0
        self.depth = 0

    # helpers
    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def fail(self, msg: str, tok: Token | None = None) -> ExprError:
        return ExprError(msg, expression=self.text, position=(tok or self.tok).pos)

    def advance(self) -> Token:
        t = self.tok
        self.i += 1
        return t

    def is_kw(self, *words: str) -> bool:
        return self.tok.kind == "NAME" and self.tok.text.lower() in words

    def is_op(self, *ops: str) -> bool:
        return self.tok.kind == "OP" and self.tok.text in ops

    def expect_kw(self, word: str, after: str) -> Token:
        if not self.is_kw(word):
            raise self.fail(f"expected '{word}' {after}, found {self.describe()}")
        return self.advance()

    def expect_op(self, op: str, after: str) -> Token:
        if not self.is_op(op):
            raise self.fail(f"expected '{op}' {after}, found {self.describe()}")
        return self.advance()

    def describe(self) -> str:
        return "the end" if self.tok.kind == "EOF" else repr(self.tok.text)

    # grammar
    def parse(self) -> Node:
        if self.tok.kind == "EOF":
            raise self.fail("the expression is empty")
        node = self.expr()
        if self.tok.kind != "EOF":
            if self.is_op("."):
                raise self.fail("'.' only joins an input and one of its fields (input.field); "
                                "there is no attribute access")
            if self.is_op("("):
                raise self.fail("only the language's functions can be called, by name")
            raise self.fail(f"unexpected {self.describe()}; expected an operator or the end of the expression")
        return node

    def expr(self) -> Node:
        return self.nested(self.or_)

    def or_(self) -> Node:
        node = self.and_()
        while self.is_kw("or"):
            t = self.advance()
            node = Binary(t.pos, "or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.is_kw("and"):
            t = self.advance()
            node = Binary(t.pos, "and", node, self.not_())
        return node

    def nested(self, parse_next):  # a guard against stack exhaustion by prefix operators
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"the expression nests more than {MAX_DEPTH} deep; split it into derived columns")
        try:
            return parse_next()
        finally:
            self.depth -= 1

    def not_(self) -> Node:
        if self.is_kw("not"):
            t = self.advance()
            return Unary(t.pos, "not", self.nested(self.not_))
        return self.cmp()

    def cmp(self) -> Node:
        left = self.sum()
        t = self.tok
        if self.is_op("=", "!=", "<", "<=", ">", ">="):
            self.advance()
            node: Node = Binary(t.pos, t.text, left, self.sum())
        elif self.is_kw("is"):
            self.advance()
            neg = bool(self.is_kw("not") and self.advance())
            self.expect_kw("null", "after 'is' (write 'x is null' or 'x is not null')")
            node = IsNull(t.pos, left, neg)
        elif self.is_kw("not", "in", "between"):
            neg = bool(self.is_kw("not") and self.advance())
            if self.is_kw("in"):
                self.advance()
                self.expect_op("(", "after 'in' (write x in ('a', 'b'))")
                items = [self.item()]
                while self.is_op(","):
                    self.advance()
                    items.append(self.item())
                self.expect_op(")", "to close the list of 'in' values")
                node = InList(t.pos, left, tuple(items), neg)
            elif self.is_kw("between"):
                self.advance()
                low = self.sum()
                self.expect_kw("and", "between the bounds of 'between'")
                node = Between(t.pos, left, low, self.sum(), neg)
            else:
                raise self.fail(f"expected 'in' or 'between' after 'not', found {self.describe()}")
        else:
            return left
        if self.is_op("=", "!=", "<", "<=", ">", ">=") or self.is_kw("is", "in", "between"):
            raise self.fail("comparisons do not chain; join them with 'and' (a < b and b < c)")
        return node

    def sum(self) -> Node:
        node = self.product()
        while self.is_op("+", "-"):
            t = self.advance()
            node = Binary(t.pos, t.text, node, self.product())
        return node

    def product(self) -> Node:
        node = self.unary()
        while self.is_op("*", "/", "%"):
            t = self.advance()
            node = Binary(t.pos, t.text, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.is_op("-"):
            t = self.advance()
            operand = self.nested(self.unary)
            if isinstance(operand, Lit) and operand.kind in ("int", "float"):
                return Lit(t.pos, operand.kind, -operand.value)
            return Unary(t.pos, "-", operand)
        return self.primary()

    def literal(self) -> Node | None:
        t = self.tok
        if t.kind == "NUM":
            self.advance()
            return Lit(t.pos, "float" if isinstance(t.value, float) else "int", t.value)
        if t.kind == "STR":
            self.advance()
            return Lit(t.pos, "string", t.value)
        if t.kind == "PARAM":
            self.advance()
            return Param(t.pos, t.text)
        if t.kind == "NAME":
            word = t.text.lower()
            if word in ("true", "false"):
                self.advance()
                return Lit(t.pos, "bool", word == "true")
            if word in ("date", "timestamp") and self.toks[self.i + 1].kind == "STR":
                self.advance()
                return Lit(t.pos, word, self._temporal(word, self.advance()))
        return None

    def _temporal(self, kind: str, t: Token) -> date | datetime:
        try:
            if kind == "date":
                return date.fromisoformat(t.value)
            return datetime.fromisoformat(t.value)
        except ValueError:
            example = "date'2025-01-31'" if kind == "date" else "timestamp'2025-01-31 08:00:00+08:00'"
            raise self.fail(f"{t.value!r} is not a valid {kind}; write it as {example}", t) from None

    def item(self) -> Node:
        t = self.tok
        if self.is_op("-") and self.toks[self.i + 1].kind == "NUM":
            self.advance()
            num = self.advance()
            return Lit(t.pos, "float" if isinstance(num.value, float) else "int", -num.value)
        node = self.literal()
        if node is None and self.is_kw("null"):
            raise self.fail("null never equals anything; test it apart with 'x is null'")
        if node is None:
            raise self.fail(f"list items are literal values or parameters; found {self.describe()}")
        return node

    def primary(self) -> Node:
        t = self.tok
        lit = self.literal()
        if lit is not None:
            return lit
        if self.is_kw("null"):
            self.advance()
            return Lit(t.pos, "null", None)
        if self.is_kw("case"):
            return self.case()
        if self.is_op("("):
            self.advance()
            node = self.expr()
            self.expect_op(")", "to close '('")
            return node
        if self.is_op("["):
            raise self.fail("a [list] is only an argument of a function such as bucket(x, [0, 10, 100])")
        if t.kind == "NAME":
            if t.text.lower() in KEYWORDS:
                raise self.fail(f"{t.text!r} is a keyword and cannot start a value here")
            self.advance()
            if self.is_op("("):
                return self.call(t)
            if self.is_op("."):
                self.advance()
                field = self.tok
                if field.kind != "NAME":
                    raise self.fail("'.' joins an input and one of its fields: write input.field")
                self.advance()
                if self.is_op(".", "("):
                    raise self.fail("there is no attribute access or method call: a column is name or input.field")
                return Col(t.pos, t.text, field.text)
            return Col(t.pos, None, t.text)
        raise self.fail(f"expected a value, found {self.describe()}")

    def call(self, name: Token) -> Node:
        fn = name.text.lower()
        if fn not in FUNCTIONS:
            raise self.fail(f"unknown function {name.text!r}; the functions are {', '.join(sorted(FUNCTIONS))}", name)
        self.advance()  # (
        args: list[Node] = []
        if not self.is_op(")"):
            args.append(self.arg())
            while self.is_op(","):
                self.advance()
                args.append(self.arg())
        self.expect_op(")", f"to close the arguments of {fn}()")
        least, most = FUNCTIONS[fn]
        if not least <= len(args) <= most:
            want = str(least) if least == most else f"{least} to {most}"
            raise self.fail(f"{fn}() takes {want} arguments, not {len(args)}", name)
        if self.is_op("."):
            raise self.fail("there is no attribute access: a function's result has no fields")
        return Call(name.pos, fn, tuple(args))

    def arg(self) -> Node:
        if self.is_op("["):
            t = self.advance()
            items = [self.item()]
            while self.is_op(","):
                self.advance()
                items.append(self.item())
            self.expect_op("]", "to close the list")
            return ListLit(t.pos, tuple(items))
        return self.expr()

    def case(self) -> Node:
        start = self.advance()
        whens: list[tuple[Node, Node]] = []
        while self.is_kw("when"):
            self.advance()
            cond = self.expr()
            self.expect_kw("then", "after the condition of 'when'")
            whens.append((cond, self.expr()))
        if not whens:
            raise self.fail("'case' needs at least one 'when … then …'")
        otherwise = None
        if self.is_kw("else"):
            self.advance()
            otherwise = self.expr()
        self.expect_kw("end", "to close 'case'")
        return Case(start.pos, tuple(whens), otherwise)


def parse(text: str) -> Node:
    """Parse one expression; raise ExprError with the position and what to write instead."""
    if not isinstance(text, str):
        raise ExprError(f"an expression is text, not {type(text).__name__}")
    return _Parser(text).parse()


def parse_column(text: str) -> Col:
    """Parse a column reference (`name` or `input.field`) as used in lists of columns."""
    node = parse(text)
    if not isinstance(node, Col):
        raise ExprError("expected a column (name or input.field); derive the value first and name it",
                        expression=text, position=1)
    return node
