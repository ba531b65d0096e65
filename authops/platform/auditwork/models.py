"""Audit-work tables (audit findings, generated reports)."""
