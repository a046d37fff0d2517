# The Phalanx scheduler image: `make image` (needs docker with a running daemon, or podman).
# manifests/deploy/deployment.yaml runs it as user 10001 with a read-only root filesystem.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# Only the packages `phalanx run` imports (.dockerignore keeps the rest of the checkout
# out of the build context). A regular install, not editable: the code lands in
# site-packages, compiled to bytecode now, since nothing may be written at run time.
WORKDIR /build
COPY pyproject.toml README.md ./
COPY gcpause/ gcpause/
COPY kube/ kube/
COPY topology/ topology/
COPY solver/ solver/
COPY scheduler/ scheduler/
RUN pip install . \
 && rm -rf /build

ENV PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 phalanx \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin phalanx
WORKDIR /
USER 10001:10001
EXPOSE 10270
ENTRYPOINT ["phalanx", "run"]
