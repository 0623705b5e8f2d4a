"""Unsupervised anomaly detection over operational events (file uploads / API calls).

``data`` generates seeded synthetic events and labelled anomalies, ``build`` trains an isolation
forest on normal events and exports it as a servable ONNX model, ``evaluate`` prints held-out metrics.
See ``MODEL_CARD.md`` in this directory.
"""
