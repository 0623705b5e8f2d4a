# syntax=docker/dockerfile:1
# infer: gRPC inference server (Open Inference Protocol / Triton gRPC API).
#
#   docker build -t infer:0.1.0 .                                    # CPU image (the default target, last stage)
#   docker build --build-arg INFER_EXTRAS=postgres -t infer:0.1.0-postgres .
#                                     # + psycopg (LGPL-3.0) for --registry-url postgresql://... (deploy/kubernetes)
#   docker build --target gpu -t infer:0.1.0-gpu .                   # CUDA 13 + cuDNN 9: onnxruntime-gpu, TensorRT
#   docker run -p 8001:8001 -p 8002:8002 infer:0.1.0
#   docker run --gpus all -p 8001:8001 -p 8002:8002 infer:0.1.0-gpu
#
# Both runtime targets run as the numeric non-root user 10001 (so Kubernetes' runAsNonRoot can verify it), keep the
# default model repository in /var/lib/infer/model_repository, answer HEALTHCHECK with `infer probe --service ready`
# and start `infer serve`. Base images are pinned to a minor release and an OS release; pin digests in production.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY kernels ./kernels
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

# The default repository is trained and exported here, with the forecast extra (statsmodels, lightgbm, onnxmltools:
# the ARIMA and gradient-boosting candidates), so the served image needs none of them and start-up only loads it.
FROM ${PYTHON_IMAGE} AS models
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/infer-*.whl)[forecast]" \
    && infer build-default-repository --path /models

# GPU image: NVIDIA's CUDA runtime with cuDNN 9 and the OS's own Python (3.12 on Ubuntu 24.04, the version the GPU
# checks in benchmarks/gpu ran on), in a venv. The CUDA major must be the one PyPI's wheels are built for: 13 for
# onnxruntime-gpu 1.31 (its cuda extra pins nvidia-*-cu13) and for TensorRT 10 (tensorrt-cu13); hosts need an NVIDIA
# driver of the 580 branch or newer. Set CUDA_IMAGE to follow them.
FROM ${CUDA_IMAGE} AS gpu
ARG INFER_EXTRAS=""
ARG GPU_EXTRAS="gpu,tensorrt"
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 INFER_HOME=/var/lib/infer PATH=/opt/infer/bin:${PATH}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 infer \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/infer --create-home --shell /usr/sbin/nologin infer
COPY --from=build /wheels /wheels
# onnxruntime (a dependency) and onnxruntime-gpu (the gpu extra) install the same `onnxruntime` package: the one
# installed last overwrites the other's files, so the CPU build is removed and the GPU build put back whole.
RUN python3.12 -m venv /opt/infer \
    && pip install --no-cache-dir "$(ls /wheels/infer-*.whl)[${GPU_EXTRAS}${INFER_EXTRAS:+,${INFER_EXTRAS}}]" \
    && ort="$(python -c 'import importlib.metadata as m; print(m.version("onnxruntime-gpu"))')" \
    && pip uninstall -y onnxruntime onnxruntime-gpu \
    && pip install --no-cache-dir --no-deps "onnxruntime-gpu==${ort}" \
    && rm -rf /wheels
# ONNX Runtime's TensorRT provider dlopens libnvinfer, which the tensorrt wheels keep inside site-packages: put
# wherever they landed on the loader's path.
RUN find /opt/infer/lib -name 'libnvinfer.so.*' -printf '%h\n' > /etc/ld.so.conf.d/infer-tensorrt.conf \
    && ldconfig
COPY --from=models --chown=10001:10001 /models /var/lib/infer/model_repository
USER 10001:10001
WORKDIR /var/lib/infer
EXPOSE 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 CMD ["infer", "probe", "--service", "ready"]
ENTRYPOINT ["infer", "serve"]
CMD ["--grpc-port", "8001", "--metrics-port", "8002"]

# CPU image (the default target): the slim Python image and the wheel, nothing else.
FROM ${PYTHON_IMAGE} AS cpu
ARG INFER_EXTRAS=""
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 INFER_HOME=/var/lib/infer
RUN groupadd --system --gid 10001 infer \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/infer --create-home --shell /usr/sbin/nologin infer
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/infer-*.whl)${INFER_EXTRAS:+[${INFER_EXTRAS}]}" \
    && rm -rf /wheels
COPY --from=models --chown=10001:10001 /models /var/lib/infer/model_repository
USER 10001:10001
WORKDIR /var/lib/infer
EXPOSE 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 CMD ["infer", "probe", "--service", "ready"]
ENTRYPOINT ["infer", "serve"]
CMD ["--grpc-port", "8001", "--metrics-port", "8002"]
