# syntax=docker/dockerfile:1
# An OrderFlow store node: the FastAPI app under uvicorn, and nothing else.
# Only requirements-node.txt is installed: the embedded Postgres and Redis
# wheels, the cluster launcher and the test tools stay out (see .dockerignore).
#
#   docker build -t orderflow-node .
#   docker run --env-file .env -p 8000:8000 orderflow-node
#   docker run --env-file .env orderflow-node python -m backend.migrate "$DATABASE_URL" --seed

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: the virtual environment, from wheels only (no compiler in the image)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ONLY_BINARY=:all:
RUN python -m venv /opt/venv
COPY requirements-node.txt /tmp/requirements-node.txt
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements-node.txt

# ---- runtime
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="orderflow-node" \
      org.opencontainers.image.description="OrderFlow store node: real-time, multi-node inventory sync" \
      org.opencontainers.image.licenses="MIT"

RUN groupadd --system --gid 10001 orderflow \
    && useradd --system --uid 10001 --gid orderflow --home-dir /var/lib/orderflow \
       --shell /usr/sbin/nologin orderflow \
    && mkdir -p /var/lib/orderflow/receipts \
    && chown -R orderflow:orderflow /var/lib/orderflow

COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8000 \
    FORWARDED_ALLOW_IPS=127.0.0.1 \
    GRACEFUL_SECONDS=15 \
    RECEIPTS_DIR=/var/lib/orderflow/receipts

# The code is root's and read-only to the node; compiled once here, not at each start.
WORKDIR /app
COPY database.py ./
COPY supabase/ supabase/
COPY backend/ backend/
RUN python -m compileall -q /app

USER 10001:10001
EXPOSE 8000
VOLUME ["/var/lib/orderflow"]

# The node drains on SIGTERM (backend/signals.py): /ready fails, after
# SHUTDOWN_DELAY_SECONDS its WebSocket clients are told to reconnect elsewhere
# (at most SHUTDOWN_TIMEOUT_SECONDS), then uvicorn finishes in-flight requests
# (at most GRACEFUL_SECONDS) and the bus outbox is flushed. Give the container
# at least their sum plus a few seconds to stop (compose: stop_grace_period).
STOPSIGNAL SIGTERM

# No curl in the slim image: the standard library asks /health.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=2)"]

# exec: uvicorn is PID 1 and gets the stop signal itself. FORWARDED_ALLOW_IPS
# names the load balancer whose X-Forwarded-For the node believes.
CMD ["/bin/sh", "-c", "exec uvicorn backend.main:app --host 0.0.0.0 --port \"$PORT\" --proxy-headers --forwarded-allow-ips \"$FORWARDED_ALLOW_IPS\" --timeout-graceful-shutdown \"$GRACEFUL_SECONDS\""]
