# infer: gRPC inference server (Open Inference Protocol / Triton gRPC API)
# docker build -t infer . && docker run -p 8001:8001 -p 8002:8002 infer
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY kernels ./kernels
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

# The default repository is trained and exported here, with the forecast extra (statsmodels, lightgbm, onnxmltools:
# the ARIMA and gradient-boosting candidates), so the served image needs none of them and start-up only loads it.
FROM python:3.11-slim AS models
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/*.whl)[forecast]" && infer build-default-repository --path /models

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 INFER_HOME=/var/lib/infer
RUN useradd --system --home /var/lib/infer --create-home infer
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY --from=models --chown=infer /models /var/lib/infer/model_repository
USER infer
EXPOSE 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD ["infer", "probe", "--service", "ready"]
ENTRYPOINT ["infer", "serve"]
CMD ["--grpc-port", "8001", "--metrics-port", "8002"]
