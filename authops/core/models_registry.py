"""Import every module that declares tables, so metadata (and Alembic) sees them all."""

import importlib

MODEL_MODULES = [
    "authops.core.jobs.models",
    "authops.audit.models",
    "authops.audit.anomaly.models",
    "authops.policies.models",
    "authops.platform.identity.models",
    "authops.platform.catalog.models",
    "authops.policies.budget_models",
    "authops.sandbox.models",
    "authops.platform.governance.models",
    "authops.billing.models",
    "authops.platform.products.models",
    "authops.platform.products.joint_models",
    "authops.platform.products.sme_models",
    "authops.platform.products.report_models",
    "authops.platform.assessment.models",
    "authops.platform.auditwork.models",
]


def import_all_models() -> None:
    # Importing upward from core is deliberate and only for metadata assembly.
    for name in MODEL_MODULES:
        importlib.import_module(name)
