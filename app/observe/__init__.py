"""Observability: Prometheus metrics (`app.observe.metrics.GatewayMetrics`)."""
