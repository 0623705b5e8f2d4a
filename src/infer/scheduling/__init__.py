"""Scheduling: bounded priority queues and the dynamic batcher, one scheduler per model version."""
