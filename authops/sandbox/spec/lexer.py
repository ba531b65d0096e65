"""The tokenizer of the spec expression language: text to tokens, refusing what is not the language.

Only ASCII letters, digits, single-quoted text, `:param` and a few operators are tokens;
anything else (double quotes, '_'-names, ';', backquotes …) stops here with its position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from authops.sandbox.spec.errors import ExprError

MAX_LENGTH = 4000
MAX_DEPTH = 48

KEYWORDS = frozenset({"and", "or", "not", "in", "between", "is", "null", "true", "false",
                      "case", "when", "then", "else", "end"})
# name -> (least, most) arguments. Types and meaning (check.py):
#   year/month/day/quarter/weekday(date|timestamp) -> int   weekday: 1 = Monday … 7 = Sunday
#   date(timestamp|date) -> date; date_diff_days(a, b) -> int, a - b in days
#     (a timestamp's day, and so its parts, are taken in Asia/Shanghai)
#   bucket(number, [edges], ['labels']?) -> text: '(-inf, e0)', '[e0, e1)', … '[en, +inf)' or the labels given
#   coalesce(a, b, …) -> first non-null; abs(number); round(number, digits 0-12?) half away from zero
#   length(text) -> int (characters); upper/lower(text); substr(text, start from 1, length?) -> text
#   contains(text, text) -> bool (plain substring, no patterns)
FUNCTIONS: dict[str, tuple[int, int]] = {
    "year": (1, 1), "month": (1, 1), "day": (1, 1), "quarter": (1, 1), "weekday": (1, 1), "date": (1, 1),
    "date_diff_days": (2, 2), "bucket": (2, 3), "coalesce": (2, 16), "abs": (1, 1), "round": (1, 2),
    "length": (1, 1), "upper": (1, 1), "lower": (1, 1), "substr": (2, 3), "contains": (2, 2),
    "concat": (2, 16), "least": (2, 16), "greatest": (2, 16), "reasons": (2, 32), "fixed": (2, 2),
}
_NUMBER = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_OPS2 = ("<=", ">=", "!=", "<>", "==")
_OPS1 = "+-*/%=<>(),[]."
_REFUSED = {
    '"': "text is written in single quotes ('like this'); double quotes are not part of the language",
    "_": "names start with a letter; '_' cannot start a name",
    ";": "';' is not part of the language: an expression is one expression, not statements",
    "`": "backquotes are not part of the language; columns are plain names or input.field",
    "{": "braces are not part of the language", "}": "braces are not part of the language",
    "#": "comments are not part of the language",
    "\\": "backslashes are not part of the language",
}
_NOT_HERE = {"lambda": "functions cannot be defined here; write the value as one expression",
             "import": "there is no import: only the functions listed in the spec language exist"}


@dataclass(frozen=True)
class Token:
    kind: str  # NUM STR NAME PARAM OP EOF
    text: str
    pos: int  # 1-based
    value: Any = None


def tokenize(text: str) -> list[Token]:
    def fail(msg: str, i: int) -> ExprError:
        return ExprError(msg, expression=text, position=i + 1)

    if len(text) > MAX_LENGTH:
        raise ExprError(f"the expression is {len(text)} characters; split it into derived columns "
                        f"of at most {MAX_LENGTH}")
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c.isascii() and c.isdigit():
            m = _NUMBER.match(text, i)
            assert m
            j = m.end()
            if j < n and (text[j].isalpha() or text[j] in "_."):
                raise fail("a number runs into a name or a '.'; put an operator or a space between them", j)
            s = m.group()
            if m.group(1) or m.group(2):
                out.append(Token("NUM", s, i + 1, float(s)))
            else:
                if int(s) >= 2 ** 63:
                    raise fail("this whole number does not fit in 64 bits", i)
                out.append(Token("NUM", s, i + 1, int(s)))
            i = j
        elif c.isascii() and c.isalpha():
            m = _NAME.match(text, i)
            assert m
            word = m.group()
            if word.lower() in _NOT_HERE:
                raise fail(_NOT_HERE[word.lower()], i)
            out.append(Token("NAME", word, i + 1))
            i = m.end()
        elif c == "'":
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise fail("this text is not closed; end it with a single quote (write '' for a quote inside)", i)
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            out.append(Token("STR", text[i:j + 1], i + 1, "".join(buf)))
            i = j + 1
        elif c == ":":
            m = _NAME.match(text, i + 1)
            if not m:
                raise fail("':' must be followed by a parameter name, as in :as_of", i)
            out.append(Token("PARAM", m.group(), i + 1))
            i = m.end()
        elif text.startswith(_OPS2, i):
            op = text[i:i + 2]
            out.append(Token("OP", {"==": "=", "<>": "!="}.get(op, op), i + 1))
            i += 2
        elif c in _OPS1:
            out.append(Token("OP", c, i + 1))
            i += 1
        else:
            raise fail(_REFUSED.get(c, f"unexpected character {c!r}"), i)
    out.append(Token("EOF", "", n + 1))
    return out
