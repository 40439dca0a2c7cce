# syntax=docker/dockerfile:1
# The operator image: `agenttask run` (kopf) on a slim Python base, non-root, runtime dependencies only.
#
#   docker build -t agenttask-operator:dev .
#
#   agenttask images build operator     (podman, local Debian bases; see docs/images.md)
#
# Two stages: `build` installs the pinned runtime dependencies (constraints.txt; no dev extras)
# and the operator's wheel into a virtualenv that has no pip of its own (the build stage's pip
# installs into it); the final stage copies only that virtualenv. tests/chart/test_install.py
# replays the two RUN steps of the build stage in a temporary virtualenv, so keep each as one
# command over /src, /wheels and /opt/venv.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# the final stage's base: the same image by default; `agenttask images build` passes a smaller
# one with the same Python and no pip, venv or apt (controller/images/bases.py)
ARG RUNTIME_IMAGE=${PYTHON_IMAGE}

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
# 1. a virtualenv without pip, holding the runtime dependencies (pyproject.toml) at the versions
#    pinned in constraints.txt, with their bytecode: the root filesystem is read-only at run time,
#    and compiling every import at each start doubles the operator's start-up time. A layer of its
#    own, so a change to the code alone does not download them again.
RUN python -m venv --without-pip /opt/venv && python -c "import tomllib; print(*tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies'], sep=chr(10))" > /src/requirements.txt && python -m pip --python /opt/venv/bin/python install --constraint /src/constraints.txt --requirement /src/requirements.txt
COPY controller ./controller
# 2. the operator wheel (setuptools comes from PyPI in pip's isolated build env), installed into it
RUN python -m pip wheel --no-deps --wheel-dir /wheels /src && python -m pip --python /opt/venv/bin/python install --constraint /src/constraints.txt /wheels/*.whl

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="agenttask-operator" \
      org.opencontainers.image.description="Kubernetes operator running AI coding agents on GitHub issues in Daytona sandboxes" \
      org.opencontainers.image.licenses="Apache-2.0"
# a fixed, unprivileged uid/gid (the chart's podSecurityContext uses the same); no login, no home
RUN groupadd --system --gid 10001 agenttask \
 && useradd --system --uid 10001 --gid agenttask --no-create-home --home-dir /tmp --shell /usr/sbin/nologin agenttask
COPY --from=build /opt/venv /opt/venv
# HOME=/tmp: the root filesystem is read-only in the cluster; /tmp is the pod's writable emptyDir
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
# /metrics, /healthz, /readyz and /github/webhook
EXPOSE 8080
ENTRYPOINT ["agenttask", "run"]
