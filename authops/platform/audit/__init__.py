"""The audit log over HTTP: search, export, checkpoints and proofs."""
