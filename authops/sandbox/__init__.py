"""Sandbox: workspaces, jailed jobs, privacy engines and the release gate."""
