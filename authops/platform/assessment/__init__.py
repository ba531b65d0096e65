"""Supervision over the year: pre-filing, annual assessment, consequences, department assessment.

Modules: ``prefiling`` (risk-assessment reports on the bureau's schedule; overdue flags; the job
block), ``ratings`` (customers rate products they used), ``metrics`` (each metric's definition and
computation from the records), ``service`` (settings, run, expert scores, signature, consequences,
rectification and re-assessment), ``departments`` (provider departments' yearly figures).

Contract with the reports (``report_data``; keys are fixed, extra keys may be added):

    {"year", "operator": {"id", "name_zh"}, "grade", "grade_zh", "total_score",
     "thresholds": {"excellent", "qualified"},
     "signed": {"by", "at", "signature"} | None,
     "metrics": [{"key", "name_zh", "name_en", "value", "unit", "weight", "threshold", "score",
                  "sources": {"query": str, "record_ids": [...] | None, "count": int}}],
     "expert_scores": [{"expert", "score", "comment"}],
     "departments": [{"org", "name_zh", "timeliness", "completeness", "accuracy", "score"}],
     "rectification": {...} | None}

``threshold`` is the metric's target (the value that scores 100); ``score`` is 0-100; the
department figures are percentages (None where the department has no records of that kind) for the
assessed year; ``rectification`` is the rectification opened by this assessment (or, for a
re-assessment, the one it answers). Extra keys: "kind", "period", "grade_reason", "consequences".
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select


def report_data(session: Session, assessment_id: int) -> dict[str, Any]:
    """The assessment report's data (see the module docstring for the contract)."""
    from authops.platform.assessment import departments, service
    from authops.platform.assessment.models import Rectification
    from authops.platform.identity.models import Organisation

    a = service.get(session, assessment_id)
    org = session.get(Organisation, a.operator_org_id)
    rect = session.exec(select(Rectification).where(
        (Rectification.assessment_id == a.id) | (Rectification.reassessment_id == a.id))).first()
    return {
        "year": a.year, "kind": a.kind, "period": [a.period_start, a.period_end],
        "operator": {"id": a.operator_org_id, "name_zh": org.name_zh if org else ""},
        "grade": a.grade, "grade_zh": service.GRADES.get(a.grade, ""), "grade_reason": a.grade_reason or None,
        "total_score": a.total_score,
        "thresholds": {"excellent": a.settings.get("excellent"), "qualified": a.settings.get("qualified")},
        "signed": ({"by": a.signed_by, "at": a.signed_at, "signature": a.signature, "key_id": a.key_id,
                    "sha256": a.body_sha256} if a.state == "signed" else None),
        "metrics": [dict(m) for m in a.metrics],
        "expert_scores": [dict(e) for e in a.expert_scores],
        "departments": [{k: row[k] for k in ("org", "name_zh", "timeliness", "completeness", "accuracy", "score")}
                        for row in departments.table(session, a.year)],
        "rectification": service.rectification_view(rect) if rect else None,
        "consequences": list(a.consequences),
    }
