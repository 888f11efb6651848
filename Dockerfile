# forwardauth as a container: the package and nothing else, run as an unprivileged user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    FORWARDAUTH_HOST=0.0.0.0 FORWARDAUTH_PORT=8080 FORWARDAUTH_DATA_DIR=/data

WORKDIR /src
COPY pyproject.toml README.md ./
COPY forwardauth ./forwardauth
RUN pip install --no-cache-dir . && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /data forwardauth \
    && mkdir -p /data && chown forwardauth /data

USER forwardauth
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
CMD ["forwardauth", "serve"]
