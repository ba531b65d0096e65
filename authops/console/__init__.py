"""The web console: server-rendered pages (Jinja2, vendored htmx) over the platform's own services.

`authops.console.router` has the routes (public_router: login, static files, disclosure; router: every
page behind the API's permissions). Sessions, CSRF and cookie flags: `security`; permission checks:
`auth`; role homes: `homes`; labels in Chinese and English: `i18n`; SVG charts: `charts`.
"""
