"""Support package of ``llmops_reports_plugin``: the FastAPI app behind the Compliance reports page.

Imported only by the API server, on the first request to the plugin's URL prefix.
"""
