"""Third-party audit support and the yearly reports (issue 9, items 5 and 6).

Modules: ``integrity`` (export and verify the whole log, count a year range), ``deid``
(de-identification effectiveness: k achieved, suppression, re-identification risk with ``risk``
(anonymeter, imported lazily), DP parameters and budgets), ``findings`` (recorded, answered,
published onto the disclosure page), ``charts`` (one bar-chart description drawn as SVG and as a
reportlab Drawing), ``documents`` (a report as PDF, HTML and Excel), ``reports`` (the assessment,
operating and audit reports, and ``write_reports`` for the demo).
"""
