"""Job kinds of product serving (imported by the worker through HANDLER_MODULES)."""

from authops.platform.products import batch, joint, precompute  # noqa: F401 - registers the handlers
