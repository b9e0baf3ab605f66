# One image per service: the build argument SERVICE picks what it carries (chat, builder or
# deployer), beside the shared members (libs/api, services/common) and the `appforge` CLI. An
# image holds its own service and nothing of the others (docker-compose.yml builds all three).
#
#   docker build --build-arg SERVICE=chat -t appforge-chat .
#   docker run --rm -p 50051:50051 appforge-chat                      # `appforge serve` on SQLite
#   docker run --rm appforge-chat migrate                             # with DATABASE_URL set
#
# Where no registry is reachable but podman is (our CI machines, see ../shared/ci/README.md):
#   podman build --format docker --network=host -v /etc/ssl/certs:/etc/ssl/certs:ro \
#       --build-arg SERVICE=chat -t appforge-chat .

ARG SERVICE=chat

# --- build: a virtualenv with the members of this image and their dependencies ------------------
FROM python:3.11-slim AS build
ARG SERVICE
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN case "$SERVICE" in chat|builder|deployer) ;; \
      *) echo "SERVICE must be chat, builder or deployer, got '$SERVICE'" >&2; exit 1;; esac \
 && python3 -m venv /opt/appforge
WORKDIR /build
# Dependencies first, from the members' pyproject.toml alone (empty source trees stand in for
# the code), so that a change to the source rebuilds only the last layer.
COPY libs/api/pyproject.toml libs/api/
COPY services/common/pyproject.toml services/common/
COPY services/${SERVICE}/pyproject.toml services/${SERVICE}/
COPY cli/pyproject.toml cli/
# The versions `make test` ran green with (constraints.txt): an upstream release changes no image.
COPY constraints.txt ./
ENV MEMBERS="./libs/api ./services/common ./services/${SERVICE} ./cli"
RUN for member in $MEMBERS; do mkdir -p "$member/src"; done \
 && /opt/appforge/bin/pip install -c constraints.txt $MEMBERS
COPY libs/api ./libs/api
COPY services/common ./services/common
COPY services/${SERVICE} ./services/${SERVICE}
COPY cli ./cli
RUN /opt/appforge/bin/pip install --no-deps --force-reinstall $MEMBERS \
 && /opt/appforge/bin/pip uninstall --yes pip setuptools

# --- runtime: the virtualenv (compiled by pip) on a clean base, run as a non-root user ----------
FROM python:3.11-slim
ARG SERVICE
ENV PATH=/opt/appforge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APPFORGE_HOST=0.0.0.0 \
    APPFORGE_DATA_DIR=/data
RUN groupadd --gid 10001 appforge \
 && useradd --uid 10001 --gid appforge --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin appforge \
 && mkdir -p /data/deploys /data/keys \
 && chown -R appforge:appforge /data
COPY --from=build /opt/appforge /opt/appforge
LABEL org.opencontainers.image.title="appforge-${SERVICE}"
USER appforge
WORKDIR /data
# gRPC: chat 50051, builder 50052, deployer 50053; the deployer's apps over HTTP: 8080;
# Prometheus metrics (APPFORGE_METRICS_PORT): chat 9051, builder 9052, deployer 9053.
EXPOSE 50051 50052 50053 8080 9051 9052 9053
# `serve` and `health` with no service name mean the one service this image carries.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["appforge", "health"]
ENTRYPOINT ["appforge"]
CMD ["serve"]
