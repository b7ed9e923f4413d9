# syntax=docker/dockerfile:1
# voice-bridge: build the wheel's dependencies in one stage, run as a non-root user in a slim one.

FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY codecs ./codecs
COPY twiml ./twiml
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .

FROM python:3.12-slim
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin bridge
COPY --from=build /opt/venv /opt/venv
# The embedded local agent's voice (used when VOICE_BRIDGE_UPSTREAM=local).
COPY fixtures/audio /app/fixtures/audio
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VOICE_BRIDGE_AGENT_CLIPS=/app/fixtures/audio \
    VOICE_BRIDGE_LOG_FORMAT=json \
    VOICE_BRIDGE_HOST=0.0.0.0 \
    PORT=8000
WORKDIR /app
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# Exec form, so voice-bridge is PID 1 and receives SIGTERM itself (graceful shutdown, exit 0).
CMD ["voice-bridge", "serve"]
