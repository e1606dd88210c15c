# syntax=docker/dockerfile:1.7
# The Airflow image of docker-compose.yaml: Airflow 3 with mlops-ops and both extras (`airflow` and
# `step`), installed exactly as uv.lock pins them. With the LocalExecutor the scheduler container runs
# every step, so it needs the step libraries too; the same image runs `mlflow server`.
# Build from the repository root (docker compose does):
#   docker build -f docker/airflow.Dockerfile -t mlops-ops-airflow:local .
# Python 3.11, as the step image (uv.lock pins Airflow 3.3 for 3.11 and 3.12 alike).

ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/mlops-ops
WORKDIR /src
# Locked dependencies first, so this layer is reused while only our code changes.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra airflow --extra step --no-install-project
COPY mlops_ops ./mlops_ops
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra airflow --extra step --no-editable

FROM python:${PYTHON_VERSION}-slim-bookworm
# uid 50000 as in Airflow's own images. The folders the compose file mounts named volumes on exist here
# with this owner, so Docker initialises each new volume with it.
RUN groupadd --system --gid 50000 airflow \
 && useradd --system --uid 50000 --gid 50000 --home-dir /opt/airflow --no-create-home --shell /bin/sh airflow \
 && mkdir -p /opt/airflow/dags /opt/airflow/logs /opt/airflow/auth /opt/airflow/mlops \
 && chown -R 50000:50000 /opt/airflow
COPY --from=build /opt/mlops-ops /opt/mlops-ops
ENV PATH=/opt/mlops-ops/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow \
    MLOPS_HOME=/opt/airflow/mlops \
    PYTHONUNBUFFERED=1
WORKDIR /opt/airflow
USER 50000:50000
CMD ["airflow", "version"]
