# syntax=docker/dockerfile:1
# The approved runtime for aks_python: slim Python, task-agent as the entrypoint, a non-root
# user. Build the agent image first (docker/Dockerfile), then:
#
#   docker build -f docker/python-runtime.Dockerfile \
#     --build-arg AGENT_IMAGE=ghcr.io/data-platform/task-agent:0.1.0 \
#     -t ghcr.io/data-platform/python-runtime:3.12-1 docker
#
# Nothing is copied from the build context (python-runtime.Dockerfile.dockerignore empties it).
# The task's own code is a snapshot the agent fetches into /workspace at run time; its Python
# dependencies belong in a derived image (FROM this one) that the platform approves.
ARG AGENT_IMAGE=ghcr.io/data-platform/task-agent:0.1.0
ARG PYTHON_IMAGE=python:3.12.12-slim-bookworm

FROM ${AGENT_IMAGE} AS agent

FROM ${PYTHON_IMAGE}
# Unbuffered output reaches Airflow's log as it is printed; the read-only root file system
# leaves /tmp as the writable home; no bytecode is written beside the snapshot's files.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin nonroot
COPY --from=agent /usr/local/bin/task-agent /usr/local/bin/task-agent
WORKDIR /workspace
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/task-agent"]
CMD ["--help"]
LABEL org.opencontainers.image.title="python-runtime" \
      org.opencontainers.image.description="Python 3.12 with task-agent as the entrypoint: the approved runtime of aks_python tasks" \
      org.opencontainers.image.licenses="Apache-2.0"
