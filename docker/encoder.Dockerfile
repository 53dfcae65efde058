# The GPU tier: CLIP on CUDA (torch's PyPI wheels bundle the CUDA runtime; the host needs the NVIDIA driver
# and container toolkit), or on the CPU with ENCODER_DEVICE=cpu.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 app
WORKDIR /app

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall torch.
COPY pyproject.toml README.md ./
RUN mkdir imagesearch && pip install '.[encoder]' && pip uninstall --yes imagesearch

COPY imagesearch ./imagesearch
COPY encoder_service ./encoder_service
RUN pip install --no-deps .
# The demo's small CLIP (15 MB): ENCODER_MODEL=/app/checkpoints/small-clip-synthetic.pt starts offline.
COPY demo/small-clip-synthetic.pt ./checkpoints/

# Named models are downloaded once into this volume (or read from a host folder mounted there).
# Health checks also answer in plaintext on their own port, so probes work when the service speaks TLS.
ENV ENCODER_MODEL_CACHE=/models ENCODER_HOST=0.0.0.0 ENCODER_PORT=50051 ENCODER_HEALTH_PORT=50061
RUN mkdir /models && chown app /models
VOLUME /models
USER app
# gRPC, plaintext health, Prometheus metrics (--metrics-port).
EXPOSE 50051 50061 9151
HEALTHCHECK --interval=15s --timeout=10s --start-period=300s --retries=3 \
    CMD ["python", "-m", "imagesearch.healthcheck", "127.0.0.1:50061"]
ENTRYPOINT ["python", "-m", "encoder_service"]
