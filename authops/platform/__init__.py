"""Platform: identity, catalogue, workflows, the HTTP API and the console."""
