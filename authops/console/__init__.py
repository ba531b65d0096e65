"""The web console: server-rendered pages (Jinja2, vendored htmx) over the platform's own services.

`authops.console.router` has the routes (public_router: login, static files, disclosure; router: every
page behind the API's permissions); the area pages are `pages_bureau` (operator authorization and
renewal, price caps, privacy budgets, assessments, review statistics), `pages_partner` (scenario and
product drafts), `pages_customer` (marketplace, API keys, consents, batch deliveries), `pages_operator`
(revenue, costs, settlement) and `pages_audit` (reports, log verification), all on `routing.router`.
Sessions, CSRF and cookie flags: `security`; permission checks: `auth`; role homes and their to-do
shortcuts: `homes`; chart figures: `stats`; labels in Chinese and English: `i18n`; SVG charts: `charts`;
form helpers (yuan to fen, the API's request models on a form): `forms`.
"""
