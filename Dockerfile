# forwardauth as a container: the package (a regular, non-editable install) and nothing else,
# run as an unprivileged user. Give it FORWARDAUTH_DATABASE_URL and FORWARDAUTH_REDIS_URL (see
# docker-compose.yml); /data holds the signing keys, so mount a volume there and back it up.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FORWARDAUTH_HOST=0.0.0.0 FORWARDAUTH_PORT=8080 FORWARDAUTH_DATA_DIR=/data

WORKDIR /src
COPY pyproject.toml README.md ./
COPY forwardauth ./forwardauth
RUN pip install --no-cache-dir . \
    && cd / && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin forwardauth \
    && mkdir -p /data && chown forwardauth:forwardauth /data && chmod 0700 /data

USER forwardauth
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# Liveness only (/healthz); orchestrators that gate traffic should use /readyz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FORWARDAUTH_PORT', '8080'), timeout=2)"
CMD ["forwardauth", "serve"]
