"""robench's own grammar for the symbolic shapes of an exported program, parsed before torch sees them.

``torch.export``'s reader hands each ``expr_str`` of an archive to ``sympy.sympify``, which evaluates
Python (torch 2.14, ``torch/_export/serde/serialize.py``, ``_parse_sym_expr``). A string that merely
*looks* like a shape is not safe either: ``2**2**2**2**2**2`` is an ordinary sympy expression whose
evaluation never ends. So an archive's expressions are parsed here, by a small recursive-descent parser
with bounded length, token count, depth and integer size, and only the canonical text printed back from
the parse tree reaches torch. The grammar is what torch writes for batch-dynamic image classifiers::

    expr  := term (("+" | "-") term)*
    term  := unary (("*" | "//" | "%") unary)*
    unary := "-" unary | atom
    atom  := INTEGER | SYMBOL | "Symbol(" QUOTED_SYMBOL ("," FLAG "=" ("True" | "False"))* ")"
           | FUNCTION "(" expr "," expr ")" | "(" expr ")"

SYMBOL is torch's symbol naming (a short lower-case prefix and a number: ``s0``, ``s77``, ``u3``), FLAG
one of sympy's assumptions torch sets (``positive``, ``integer``, ...), FUNCTION one of ``Max``,
``Min``, ``FloorDiv``, ``Mod``, ``PythonMod``, ``CleanDiv``, ``CeilDiv``. No power, no division, no
attribute, no call of anything else, no string but a symbol name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LENGTH = 512
MAX_TOKENS = 64
MAX_PRODUCTS = 4  # "*" operators: torch expands products of sums, whose terms grow exponentially with the factors
MAX_DEPTH = 24
MAX_INTEGER = 2**63
SYMBOL = re.compile(r"[a-z]{1,4}\d{1,6}")  # torch counts unbacked symbols up to the largest index it reads
FLAGS = ("positive", "integer", "nonnegative", "real", "finite")
FUNCTIONS = ("Max", "Min", "FloorDiv", "Mod", "PythonMod", "CleanDiv", "CeilDiv")
_TOKEN = re.compile(
    r"\s*(?:(?P<int>\d{1,19})(?![\w.])|(?P<quoted>'[a-z]{1,4}\d{1,6}')"
    r"|(?P<name>[A-Za-z_]\w{0,31})|(?P<op>//|[-+*%(),=]))"
)


class ExpressionError(ValueError):
    """The text is not in the grammar (the message says where)."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _tokens(text: str) -> list[_Token]:
    if not isinstance(text, str):
        raise ExpressionError("not a string")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"longer than {MAX_LENGTH} characters")
    tokens: list[_Token] = []
    position = 0
    while text[position:].strip():
        match = _TOKEN.match(text, position)
        if match is None:
            raise ExpressionError(f"unexpected text at {text[position : position + 12].strip()!r}")
        kind = match.lastgroup or "op"
        tokens.append(_Token(kind, match.group(kind)))
        if len(tokens) > MAX_TOKENS:
            raise ExpressionError(f"more than {MAX_TOKENS} tokens")
        if sum(t.text == "*" for t in tokens) > MAX_PRODUCTS:
            raise ExpressionError(f"more than {MAX_PRODUCTS} products")
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.position = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, text: str | None = None, kind: str | None = None) -> _Token:
        token = self.peek()
        if token is None or (text is not None and token.text != text) or (kind is not None and token.kind != kind):
            wanted = text or kind or "more"
            raise ExpressionError(f"expected {wanted!r}, found {token.text if token else 'the end'!r}")
        self.position += 1
        return token

    def expr(self, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"nested deeper than {MAX_DEPTH}")
        out = self.term(depth + 1)
        while (token := self.peek()) is not None and token.text in ("+", "-"):
            self.position += 1
            out = f"({out} {token.text} {self.term(depth + 1)})"
        return out

    def term(self, depth: int) -> str:
        out = self.unary(depth + 1)
        while (token := self.peek()) is not None and token.text in ("*", "//", "%"):
            self.position += 1
            right = self.unary(depth + 1)
            # sympy reads a // b as floor(a / b) and a % b as its Mod; torch writes its own FloorDiv / Mod for both
            out = (
                f"({out} * {right})"
                if token.text == "*"
                else f"{'FloorDiv' if token.text == '//' else 'Mod'}({out}, {right})"
            )
        return out

    def unary(self, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"nested deeper than {MAX_DEPTH}")
        token = self.peek()
        if token is not None and token.text == "-":
            self.position += 1
            return f"(-{self.unary(depth + 1)})"
        return self.atom(depth + 1)

    def atom(self, depth: int) -> str:
        token = self.take()
        if token.kind == "int":
            if int(token.text) > MAX_INTEGER:
                raise ExpressionError(f"integer {token.text} is larger than 2**63")
            return str(int(token.text))
        if token.text == "(":
            inner = self.expr(depth + 1)
            self.take(")")
            return inner
        if token.kind != "name":
            raise ExpressionError(f"unexpected {token.text!r}")
        if SYMBOL.fullmatch(token.text):
            return token.text
        if token.text == "Symbol":
            return self.symbol()
        if token.text in FUNCTIONS:
            self.take("(")
            left = self.expr(depth + 1)
            self.take(",")
            right = self.expr(depth + 1)
            self.take(")")
            return f"{token.text}({left}, {right})"
        raise ExpressionError(f"the name {token.text!r} is not a shape symbol or one of {', '.join(FUNCTIONS)}")

    def symbol(self) -> str:
        self.take("(")
        name = self.take(kind="quoted").text
        flags: list[str] = []
        while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
            self.position += 1
            flag = self.take(kind="name").text
            if flag not in FLAGS or any(f.startswith(f"{flag}=") for f in flags):
                raise ExpressionError(f"Symbol() takes the assumptions {', '.join(FLAGS)} once each, not {flag!r}")
            self.take("=")
            value = self.take(kind="name").text
            if value not in ("True", "False"):
                raise ExpressionError(f"assumption {flag} must be True or False, not {value!r}")
            flags.append(f"{flag}={value}")
        self.take(")")
        return f"Symbol({', '.join([name, *flags])})"


def canonical_expression(text: str) -> str:
    """The canonical text of a symbolic shape in robench's grammar (module docstring); ExpressionError if not in it."""
    tokens = _tokens(text)
    if not tokens:
        raise ExpressionError("empty")
    parser = _Parser(tokens)
    out = parser.expr(0)
    if parser.peek() is not None:
        raise ExpressionError(f"unexpected {parser.peek().text!r} after the expression")  # type: ignore[union-attr]
    return out


def is_symbol_name(text: object) -> bool:
    """True for a name torch gives a shape symbol (``s0``, ``u12``)."""
    return isinstance(text, str) and SYMBOL.fullmatch(text) is not None
