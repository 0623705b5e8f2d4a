"""The control plane: protocol-neutral registry (and, next, deployment) operations."""
