import os
from infer.client import InferClient

target, token = os.environ.get("INFER_TARGET", "localhost:8001"), os.environ.get("INFER_TOKEN")
with InferClient(target, token=token, timeout=30) as client:
    hourly = [900 + 400 * (8 <= h % 24 < 20) + (h * 7919) % 61 - 30 for h in range(24 * 14)]  # two weeks, req/s
    forecast = client.forecast.predict(hourly, horizon=24)  # the next day, with 80% and 95% intervals
    print(forecast.model[0], forecast.mean[0, 6:12].round(), forecast.upper[0, 1, 6:12].round())
