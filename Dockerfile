# syntax=docker/dockerfile:1
# The operator and agent image: the same zipapp that build.py writes for a laptop.

# Stage 1: build the zipapp from the package sources (build.py, with shiv).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml build.py README.md ./
COPY kubetunnel/ kubetunnel/
COPY modes/ modes/
COPY manifests/ manifests/
# Outside the source tree, where `./kubetunnel` is the package directory, not the zipapp.
RUN pip install ".[build]" \
 && python build.py --output /out/kubetunnel \
 && test -f /out/kubetunnel && chmod 0755 /out/kubetunnel

# Stage 2: only the zipapp on a slim Python; no compiler, no pip cache, no sources.
FROM python:3.11-slim
# shiv unpacks the zipapp's dependencies under ~/.shiv by default. The operator runs as a user
# without a home and with a read-only root filesystem; the Deployment mounts an emptyDir at /tmp.
ENV SHIV_ROOT=/tmp/.shiv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed UID, so runAsNonRoot/runAsUser in the manifests can name it.
RUN groupadd --system --gid 10001 kubetunnel \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin kubetunnel
COPY --from=build /out/kubetunnel /usr/local/bin/kubetunnel
USER 10001
ENTRYPOINT ["kubetunnel"]
CMD ["operator"]
