"""Assessment tables (pre-filings, ratings, assessments, rectifications, department assessments)."""
