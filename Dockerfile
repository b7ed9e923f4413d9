# syntax=docker/dockerfile:1
#
# voice-bridge container image.
#
#   docker build -t voice-bridge .
#   docker run --rm -p 8000:8000 -e TWILIO_AUTH_TOKEN=... -e VOICE_BRIDGE_PUBLIC_URL=https://host voice-bridge
#
# Two stages on the same base: `build` installs the locked dependencies (wheels only, every file
# hash-checked) and the project's own wheel into /opt/venv; `runtime` copies that venv and nothing
# else, so the final image has no compiler, no build tools and no pip cache, and runs as uid 10001.
# .ci/check-deploy.sh repeats these install steps in a clean venv and runs a simulated call on it.
#
# Base: CPython 3.12 on Debian slim. 3.12 is the version the lock (requirements.lock) is resolved
# for and the one the install check runs; every dependency ships manylinux wheels for it (amd64
# and arm64), so nothing is compiled. For byte-for-byte rebuilds pin the digest:
#   docker build --build-arg PYTHON_IMAGE=python:3.12-slim@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# 1. Third-party dependencies, exactly as locked: binary wheels only, each file's hash checked.
#    (Its own layer, so code changes do not reinstall them.)
COPY requirements.lock ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-deps --only-binary=:all: --require-hashes -r requirements.lock
# 2. The project itself, as a wheel, with no dependency resolution (they are all in already);
#    `pip check` fails the build if the lock no longer satisfies pyproject.toml.
COPY pyproject.toml README.md ./
# bridge/devtools/ (local agent, phone simulator, replay) ships too, on purpose: `serve` with the
# default VOICE_BRIDGE_UPSTREAM=local starts the embedded agent from it, and the image's smoke test
# (.ci/check-deploy.sh) calls it with `voice-bridge call`. No production module imports it
# (tests/test_import_graph.py), so `serve` against a cloud upstream never loads it.
COPY bridge ./bridge
COPY codecs ./codecs
COPY twiml ./twiml
# The data the wheel ships (pyproject.toml: package `bridge.fixtures`): the local agent's voice,
# the simulated caller's question and the example lookup_order tool's orders.json.
COPY fixtures/__init__.py fixtures/orders.json ./fixtures/
COPY fixtures/audio ./fixtures/audio
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && /opt/venv/bin/pip install --no-deps --no-index /tmp/wheels/voice_bridge-*.whl \
 && /opt/venv/bin/pip check

FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="voice-bridge" \
      org.opencontainers.image.description="Bridges Twilio phone calls (Media Streams) to Realtime speech-to-speech models" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
RUN groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin bridge
COPY --from=build /opt/venv /opt/venv
# The embedded local agent's voice (used when VOICE_BRIDGE_UPSTREAM=local) and the example
# lookup_order tool's orders.json are package data inside the venv (read-only, root-owned); point
# VOICE_BRIDGE_AGENT_CLIPS / VOICE_BRIDGE_ORDERS_FILE at mounted files to replace them.
# PYTHONDONTWRITEBYTECODE: the venv was byte-compiled at install time and the root filesystem may
# be read-only (Kubernetes readOnlyRootFilesystem), so never try to write .pyc files at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VOICE_BRIDGE_LOG_FORMAT=json \
    VOICE_BRIDGE_HOST=0.0.0.0 \
    PORT=8000
WORKDIR /app
# Numeric, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 10001:10001
EXPOSE 8000
# For `docker run` and Compose. Kubernetes and Container Apps ignore it and use their own probes
# (liveness /healthz, readiness /readyz; see deploy/).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"]
# Exec form, no shell: voice-bridge is PID 1 and receives SIGTERM itself; it installs its own
# SIGTERM/SIGINT handlers (uvicorn's), shuts down gracefully and exits 0. It starts no child
# processes, so no init process is needed to reap zombies.
STOPSIGNAL SIGTERM
ENTRYPOINT ["voice-bridge"]
CMD ["serve"]
