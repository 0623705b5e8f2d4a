"""The data plane: protocol-neutral health, metadata, inference, statistics and repository calls."""
