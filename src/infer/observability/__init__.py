"""Observability: Prometheus metrics and logging, called from any layer through small interfaces."""
