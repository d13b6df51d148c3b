# syntax=docker/dockerfile:1
# optbench worker image: Celery worker with torch, numpy, scikit-learn (`[worker]` extra).
#
# CPU (default):
#   docker build -f docker/worker.Dockerfile -t optbench-worker .
# NVIDIA GPU hosts (the CUDA wheels bundle the CUDA runtime; the host only needs the
# driver + NVIDIA Container Toolkit, so the slim base still works):
#   docker build -f docker/worker.Dockerfile \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t optbench-worker:cu128 .
# BASE_IMAGE may be swapped for another image that provides Python 3.11 and pip.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Wheel index torch is taken from: .../whl/cpu (default) or a CUDA one such as .../whl/cu128.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OPTBENCH_HOME=/var/lib/optbench \
    OPTBENCH_WORKER_METRICS_PORT=9101

# psycopg[binary] bundles libpq, so no apt packages are needed.
RUN groupadd --system --gid 10001 optbench \
 && useradd --system --uid 10001 --gid optbench --home-dir /var/lib/optbench \
      --no-create-home --shell /usr/sbin/nologin optbench \
 && mkdir -p /var/lib/optbench \
 && chown optbench:optbench /var/lib/optbench

WORKDIR /app
COPY . /app
# The torch index's builds carry a local tag (+cpu, +cu128) that sorts above PyPI's
# build of the same version, so pip takes torch from TORCH_INDEX_URL.
RUN pip install --extra-index-url "${TORCH_INDEX_URL}" ".[worker]"

USER optbench
# Prometheus metrics of the worker (GET /metrics).
EXPOSE 9101
CMD ["optbench", "worker"]
