"""Transports that expose the infer engine to clients."""
