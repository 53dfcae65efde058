# The search page: Starlette on uvicorn and the SDK. No torch, no Milvus, no CUDA.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 app
WORKDIR /app

# Dependencies first, from pyproject.toml alone: the web extra (starlette, uvicorn, the SDK's), never torch.
COPY pyproject.toml README.md ./
RUN mkdir imagesearch && pip install '.[web]' && pip uninstall --yes imagesearch

COPY imagesearch ./imagesearch
COPY client ./client
COPY web ./web
RUN pip install --no-deps .

ENV WEB_HOST=0.0.0.0 WEB_PORT=8080
USER app
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["python", "-m", "web"]
