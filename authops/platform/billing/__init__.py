"""Billing with governance's objects (products, agreements, operator authorization) and its routes.

Entry points for Python callers (the demo, the CLI):
    pricing.set_max_revenue / set_cap / set_price / file_trial / published_prices  — regulated prices
    invoices.usage / monthly_statements / statement / meter_subscriptions          — usage and statements
    revenue.status / notify_warnings                                               — the revenue ceiling
    settlement.run / file / view / visible / document / drc_report / drc_document  — yearly settlement
The rules themselves live one layer down in authops.billing (prices, metering, rating, books,
sharing, statements, render).
"""
