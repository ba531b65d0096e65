"""Supervision over HTTP: anomaly rules, cases and their review, access blocks, incidents."""
