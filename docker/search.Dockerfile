# The search tier: no torch, no CUDA, small.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 app
WORKDIR /app

# Dependencies first, from pyproject.toml alone: the search extra (pymilvus, milvus-lite), never torch.
COPY pyproject.toml README.md ./
RUN mkdir imagesearch && pip install '.[search]' && pip uninstall --yes imagesearch

COPY imagesearch ./imagesearch
COPY search_service ./search_service
RUN pip install --no-deps .

# Health checks also answer in plaintext on their own port, so probes work when the service speaks TLS.
# Thumbnails of the stored pictures: one folder that every replica shares (a volume).
ENV SEARCH_HOST=0.0.0.0 SEARCH_PORT=50052 SEARCH_HEALTH_PORT=50062 SEARCH_MILVUS_URI=/data/milvus.db \
    SEARCH_THUMBNAIL_DIR=/data/thumbnails
RUN mkdir -p /data/thumbnails && chown -R app /data
VOLUME /data
USER app
# gRPC, plaintext health, Prometheus metrics (--metrics-port).
EXPOSE 50052 50062 9152
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "imagesearch.healthcheck", "127.0.0.1:50062"]
ENTRYPOINT ["python", "-m", "search_service"]
