"""Governance housekeeping the workers' maintenance loop runs: deliver the outbox every pass;
once a minute flag overdue reviews, expire agreements past their term and add reminders."""

from __future__ import annotations

import time
from typing import Any

from authops.core import db as core_db
from authops.core.settings import Settings
from authops.platform.governance import agreements, notifications, outbox, scenarios

SWEEP_SECONDS = 60.0
_last_sweep = 0.0


def run_due(settings: Settings, *, force: bool = False) -> dict[str, Any]:
    global _last_sweep
    counts: dict[str, Any] = {f"outbox_{k}": v for k, v in outbox.deliver_due(settings).items()}
    if force or time.monotonic() - _last_sweep >= SWEEP_SECONDS:
        _last_sweep = time.monotonic()
        from authops.platform.assessment import prefiling  # assessment builds on governance
        from authops.platform.billing import revenue as billing_revenue  # billing builds on governance

        with core_db.session_scope(settings) as session:
            counts["reviews_overdue"] = len(scenarios.flag_overdue(session) or [])
            counts["agreements_expired"] = len(agreements.sweep_expired(session) or [])
            counts["revenue_warnings_notified"] = billing_revenue.notify_warnings(session)
            counts["prefilings_overdue"] = len(prefiling.flag_overdue(session))
        counts.update({f"reminders_{k}": v for k, v in notifications.flag_due_now(settings).items()})
        # Answer sets whose sources have newer datasets are rebuilt; expired batch results removed.
        from authops.platform.products import batch as product_batches
        from authops.platform.products import precompute, sme_whitelist

        counts["answer_sets_queued"] = len(precompute.refresh_due(settings))
        counts["batch_results_expired"] = product_batches.sweep_expired(settings)
        counts["sme_whitelists_pushed"] = len(sme_whitelist.push_due(settings))
    return counts
