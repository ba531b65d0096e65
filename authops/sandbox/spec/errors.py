"""Errors of job specs: each names where in the spec it is and what to change."""

from __future__ import annotations

from authops.core.errors import InvalidInput


class SpecError(InvalidInput):
    """A job spec that cannot be run as written; `details` locates the problem."""

    code = "invalid_spec"


class ExprError(SpecError):
    """An expression that does not parse or does not type-check; `position` is 1-based."""

    code = "invalid_expression"

    def __init__(self, message: str, *, expression: str = "", position: int | None = None,
                 where: str = "") -> None:
        self.reason = message
        self.expression = expression
        self.position = position
        self.where = where
        super().__init__(self._render(), details={"where": where or None, "position": position,
                                                   "expression": expression or None})

    def _render(self) -> str:
        at = ""
        if self.position is not None:
            near = self.expression[self.position - 1:self.position + 11]
            at = f" at position {self.position}" + (f" (near {near!r})" if near else " (at the end)")
        prefix = f"{self.where}: " if self.where else ""
        return f"{prefix}{self.reason}{at}"

    def located(self, where: str) -> ExprError:
        """The same error, said to be in `where` of the spec (e.g. ``steps[2].filter``)."""
        return ExprError(self.reason, expression=self.expression, position=self.position, where=where)
