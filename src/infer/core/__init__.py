"""Core types shared by every layer: tensors, requests, model metadata, statistics, clock."""
