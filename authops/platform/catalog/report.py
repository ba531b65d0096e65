"""The row-level error report of a rejected batch: row, column, rule and what to fix, never a value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from authops.core.errors import InvalidInput

MAX_LISTED = 100


class IngestRejected(InvalidInput):
    """A batch was rejected whole; `details` lists the errors (capped) and counts all of them."""

    code = "ingest_rejected"


@dataclass
class ErrorReport:
    errors: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)
    rows: set[int] = field(default_factory=set)  # distinct rejected rows (for the accuracy figure)

    def add(self, rule: str, message: str, *, row: int | None = None, column: str | None = None) -> None:
        self.count += 1
        self.by_rule[rule] = self.by_rule.get(rule, 0) + 1
        if row is not None:
            self.rows.add(row)
        if len(self.errors) < MAX_LISTED:
            self.errors.append({"row": row, "column": column, "rule": rule, "message": message})

    def add_rows(self, rule: str, message: str, rows, *, column: str) -> None:
        """Record one error per row number in `rows` (an iterable of ints)."""
        rows = [int(r) for r in rows]
        self.count += len(rows)
        self.by_rule[rule] = self.by_rule.get(rule, 0) + len(rows)
        self.rows.update(rows)
        room = MAX_LISTED - len(self.errors)
        for r in rows[:max(room, 0)]:
            self.errors.append({"row": r, "column": column, "rule": rule, "message": message})

    def __bool__(self) -> bool:
        return self.count > 0

    def details(self) -> dict[str, Any]:
        errors = sorted(self.errors, key=lambda e: (e["row"] or 0, e["column"] or ""))
        return {"errors": errors, "error_count": self.count, "rows_rejected": len(self.rows),
                "by_rule": dict(sorted(self.by_rule.items()))}

    def raise_if_any(self, what: str) -> None:
        if self.count:
            raise IngestRejected(
                f"{what} was rejected: {self.count} error(s) in {len(self.rows) or 'the'} row(s); "
                "nothing was stored. Fix the rows listed and upload the whole batch again.",
                details=self.details())
