# gemini-proxy: OpenAI-compatible gateway to Google Gemini.
#   docker build -t gemini-proxy .
#   docker run -p 8000:8000 -e GEMINI_API_KEY=... gemini-proxy
#   docker run -p 8000:8000 -v $PWD/config.yaml:/etc/gemini-proxy/config.yaml:ro \
#              -e GEMINI_PROXY_CONFIG=/etc/gemini-proxy/config.yaml gemini-proxy
# Keys and teams made at run time live in /data/gemini-proxy.db (SQLite): keep it on a volume
# (-v gemini-proxy-data:/data), or point GEMINI_PROXY_STORAGE__DATABASE_URL at PostgreSQL.
# Usage records wait in /data/usage-spool while the database is down: keep /data on a volume
# with PostgreSQL too (one per replica).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/gemini-proxy
COPY pyproject.toml README.md ./
COPY app ./app
# The speedups extra (pysimdjson, numpy, pybase64): half the CPU of base64 embeddings, openai-python's default.
RUN pip install ".[speedups]" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway \
    && mkdir -p /etc/gemini-proxy /data \
    && chown gateway /data

USER gateway
# Listen on all interfaces inside the container; every setting can be overridden the same way
# (GEMINI_PROXY_<SECTION>__<SETTING>) or by a mounted config file (GEMINI_PROXY_CONFIG).
ENV GEMINI_PROXY_SERVER__HOST=0.0.0.0 \
    GEMINI_PROXY_SERVER__PORT=8000 \
    GEMINI_PROXY_STORAGE__DATABASE_URL=sqlite+aiosqlite:////data/gemini-proxy.db \
    GEMINI_PROXY_STORAGE__USAGE_SPOOL=/data/usage-spool
VOLUME /data
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os, sys, urllib.request; port = os.environ.get('GEMINI_PROXY_SERVER__PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"

ENTRYPOINT ["gemini-proxy"]
CMD ["serve"]
