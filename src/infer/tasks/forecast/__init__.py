"""Forecasting family: data, training, export, evaluation and model card."""
