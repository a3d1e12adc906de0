# One image for the API, the workers, the reconciler and the migration job.
#   CUDA: docker build -t seqtrain:cuda .                           (the default)
#   CPU:  docker build --build-arg TORCH_VARIANT=cpu -t seqtrain:cpu .   (a much smaller image)
# TORCH_INDEX_URL overrides the wheel index either variant installs torch from.
FROM python:3.11-slim

ARG TORCH_VARIANT=cuda
ARG TORCH_INDEX_URL=""
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SEQTRAIN_VAR_DIR=/var/lib/seqtrain

WORKDIR /app
# torch first, in its own layer: it is most of the image and changes least often.
# PyPI's Linux wheels carry CUDA; the CPU wheels come from PyTorch's CPU index.
RUN case "$TORCH_VARIANT" in \
      cpu)  index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" ;; \
      cuda) index="${TORCH_INDEX_URL:-https://pypi.org/simple}" ;; \
      *) echo "TORCH_VARIANT must be cpu or cuda, got '$TORCH_VARIANT'" >&2; exit 1 ;; \
    esac \
    && pip install --index-url "$index" torch==2.13.0
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
