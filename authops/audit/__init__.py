"""Audit: the tamper-evident log, anomaly rules, assessment and disclosure."""
