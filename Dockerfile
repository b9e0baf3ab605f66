# One image for the three services: `appforge serve chat|builder|deployer` (see docker-compose.yml).
#
#   docker build -t appforge:latest .
#   docker run --rm -p 50051:50051 appforge:latest                       # chat on SQLite in /data
#   docker run --rm -p 50052:50052 appforge:latest serve builder --host 0.0.0.0
#
# Where no registry is reachable but podman is (our CI machines, see ../shared/ci/README.md):
#   podman build --format docker --network=host -v /etc/ssl/certs:/etc/ssl/certs:ro -t appforge .

# --- build: a virtualenv with appforge and its dependencies --------------------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/appforge
WORKDIR /build
# Dependencies first, from pyproject.toml alone (a stub package stands in for src/), so that a
# change to the source rebuilds only the last layer.
COPY pyproject.toml README.md ./
RUN mkdir -p src/appforge && touch src/appforge/__init__.py \
 && /opt/appforge/bin/pip install --no-cache-dir . \
 && rm -rf src
COPY src ./src
RUN /opt/appforge/bin/pip install --no-cache-dir --no-deps --force-reinstall . \
 && /opt/appforge/bin/pip uninstall --yes pip setuptools

# --- runtime: the virtualenv (compiled by pip) on a clean base, run as a non-root user ----------
FROM python:3.11-slim
ENV PATH=/opt/appforge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APPFORGE_HOST=0.0.0.0 \
    APPFORGE_DATA_DIR=/data
RUN groupadd --gid 10001 appforge \
 && useradd --uid 10001 --gid appforge --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin appforge \
 && mkdir -p /data/deploys \
 && chown -R appforge:appforge /data
COPY --from=build /opt/appforge /opt/appforge
USER appforge
WORKDIR /data
# gRPC: chat 50051, builder 50052, deployer 50053; the deployer's apps over HTTP: 8080;
# Prometheus metrics (APPFORGE_METRICS_PORT): chat 9051, builder 9052, deployer 9053.
EXPOSE 50051 50052 50053 8080 9051 9052 9053
# Checks the default command (chat on 50051); docker-compose.yml sets one per service.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["appforge", "health", "127.0.0.1:50051"]
ENTRYPOINT ["appforge"]
CMD ["serve", "chat", "--host", "0.0.0.0"]
