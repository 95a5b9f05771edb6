"""What `fedgate serve` shows people on its HTTP port beside the REST API: the dashboard
(`fedgate.web.dashboard`, static files in ``static/``), inference on the global model
(`fedgate.web.inference`), past runs (`fedgate.web.runs_api`) and Prometheus metrics
(`fedgate.web.metrics`). `fedgate.web.app.web_extensions` collects them for the gateway.

Layering: this package may import core, transport and store; only the gateway imports it.
"""
