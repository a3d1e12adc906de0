# One image for the API, the workers and the migration job.
#   CPU:  docker build --build-arg TORCH_INDEX_URL=<CPU wheel index> -t seqtrain .
#   CUDA: docker build -t seqtrain:cuda .      (PyPI's torch wheels for Linux carry CUDA)
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SEQTRAIN_VAR_DIR=/var/lib/seqtrain

WORKDIR /app
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0; fi
COPY pyproject.toml README.md alembic.ini ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY cli ./cli
COPY migrations ./migrations
RUN pip install . && useradd --create-home --uid 1000 seqtrain \
    && mkdir -p /var/lib/seqtrain/artifacts && chown -R seqtrain /var/lib/seqtrain
USER seqtrain
EXPOSE 8000
CMD ["seqtrain", "api", "--host", "0.0.0.0", "--port", "8000"]
