"""Routing: deployments (traffic policies on a model name) between the data plane and the schedulers."""
