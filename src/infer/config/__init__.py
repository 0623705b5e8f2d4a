"""Configuration: one pydantic model per area (server, model)."""
