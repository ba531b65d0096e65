"""Supervision during operation: anomaly rules over the audit log, blocks, review, incidents.

Importing this package subscribes the rule evaluator to the audit log (`service.install()`),
so every process that loads the models (the API, workers, the CLI) evaluates the events it
commits.
"""

from authops.audit.anomaly import service as _service

_service.install()
